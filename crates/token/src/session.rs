//! Playback sessions: a short link starts playback, a session credential that an
//! edge issues carries it on (`docs/sessions.md` is the design, `docs/token-format.md`
//! § 9 the normative layout).
//!
//! A session credential is the full link token, a `.`, and a session part:
//!
//! ```text
//! <link token> "." <session part>            (both base64url, no padding)
//!
//! session part (all integers big-endian):
//! version u8 (1) | flags u8 (bit 0 BIND, others 0) | session_id [8]
//! started_at u64 | issued_at u64 | ttl u32
//! [family u8 (4|6) | prefix u8 | addr [4|16]]      if flags & BIND
//! tag [16] = HMAC-SHA256(session secret of the link's key,
//!                        u16 len(link bytes) || link bytes || every session byte before the tag)[..16]
//! ```
//!
//! The link must carry a session policy ([`SessionPolicy`]). Verifying a session
//! verifies the link as usual (key, signature, scope, IP, country; the edge adds its
//! revocations) except two things: an HMAC link's MAC, which the session tag covers
//! ([`Session::tag_covers_link`]), and the link's expiry, which is replaced by the
//! session's checks:
//! the session started while the link was valid, it is within the policy's hard
//! maximum from that start, within its own ttl (renewed by the edge while the viewer
//! keeps fetching), and the client is in its binding.

use core::fmt;
use std::net::IpAddr;

use crate::b64;
use crate::claims::{ClaimsError, IpBinding, SessionPolicy, unmap};
use crate::keys::{Algorithm, KeyRing, TAG_LEN};
use crate::reason::Reason;
use crate::wire::{Cursor, MAX_RAW_LEN, MAX_TOKEN_LEN, Token, parse_ip, write_ip};
use crate::{Policy, Request};

/// The session part's format version.
pub const SESSION_VERSION: u8 = 1;

/// What separates the link token from the session part: not in the base64url
/// alphabet, and safe unescaped in a path segment, a query value and a cookie value.
pub const SESSION_SEPARATOR: char = '.';

/// Length of a session id in bytes.
pub const SESSION_ID_LEN: usize = 8;

const BIND: u8 = 1 << 0;
const FIXED_LEN: usize = 1 + 1 + SESSION_ID_LEN + 8 + 8 + 4;
/// Largest session part, decoded.
pub const MAX_SESSION_RAW_LEN: usize = FIXED_LEN + 2 + 16 + TAG_LEN;
/// Longest session credential string: a link, the separator and a session part.
pub const MAX_SESSION_LEN: usize = MAX_TOKEN_LEN + 1 + b64::encoded_len(MAX_SESSION_RAW_LEN);
const MAC_INPUT_LEN: usize = 2 + MAX_RAW_LEN + MAX_SESSION_RAW_LEN;

/// Random per-session identifier: in logs and metrics, never secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// What a session part says, as owned values (for issuing and inspection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionClaims {
    /// Random id, chosen by the edge that started the session; renewals keep it.
    pub id: SessionId,
    /// When the session started (the link admitted its first manifest), Unix seconds.
    pub started_at: u64,
    /// When this credential was issued (the start, or the last renewal).
    pub issued_at: u64,
    /// This credential's lifetime from `issued_at` (1..=the policy's `max_secs`).
    pub ttl: u32,
    /// The client network the session is bound to, if any.
    pub bind: Option<IpBinding>,
}

impl SessionClaims {
    /// Expiry of this credential (exclusive): `issued_at + ttl`.
    pub fn expires_at(&self) -> u64 {
        self.issued_at + u64::from(self.ttl)
    }
}

/// A parsed, **not yet verified** session credential: the link and the session part.
#[derive(Clone)]
pub struct Session {
    link: Token,
    policy: SessionPolicy,
    raw: [u8; MAX_SESSION_RAW_LEN],
    len: u8,
    claims: SessionClaims,
}

impl fmt::Debug for Session {
    /// The claims, never the tag or the credential string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("link", &self.link).field("claims", &self.claims).finish_non_exhaustive()
    }
}

/// Whether a credential string is a session credential (it holds the separator);
/// a link token never does.
pub fn is_session(credential: &str) -> bool {
    credential.as_bytes().contains(&(SESSION_SEPARATOR as u8))
}

impl Session {
    /// Splits and parses a session credential: the link with [`Token::parse`]
    /// (it must carry a session policy), then the session part. `malformed` on
    /// any structural fault.
    pub fn parse(credential: &str) -> Result<Session, Reason> {
        if credential.len() > MAX_SESSION_LEN {
            return Err(Reason::Malformed);
        }
        let (link, part) = credential.split_once(SESSION_SEPARATOR).ok_or(Reason::Malformed)?;
        let link = Token::parse(link)?;
        let policy = link.session_policy().ok_or(Reason::Malformed)?;
        if part.len() > b64::encoded_len(MAX_SESSION_RAW_LEN) {
            return Err(Reason::Malformed);
        }
        let mut raw = [0u8; MAX_SESSION_RAW_LEN];
        let len = b64::decode_into(part.as_bytes(), &mut raw).ok_or(Reason::Malformed)?;
        let body = len.checked_sub(TAG_LEN).filter(|&n| n >= FIXED_LEN).ok_or(Reason::Malformed)?;
        let b = &raw[..body];
        if b[0] != SESSION_VERSION || b[1] & !BIND != 0 {
            return Err(Reason::Malformed);
        }
        let id = SessionId(u64::from_be_bytes(b[2..10].try_into().map_err(|_| Reason::Malformed)?));
        let started_at = u64::from_be_bytes(b[10..18].try_into().map_err(|_| Reason::Malformed)?);
        let issued_at = u64::from_be_bytes(b[18..26].try_into().map_err(|_| Reason::Malformed)?);
        let ttl = u32::from_be_bytes(b[26..30].try_into().map_err(|_| Reason::Malformed)?);
        let rest = &b[FIXED_LEN..];
        let bind = if b[1] & BIND != 0 {
            let mut c = Cursor { buf: rest, pos: 0 };
            let binding = parse_ip(&mut c)?;
            if c.pos != rest.len() {
                return Err(Reason::Malformed);
            }
            Some(binding)
        } else if rest.is_empty() {
            None
        } else {
            return Err(Reason::Malformed);
        };
        if issued_at < started_at
            || ttl == 0
            || ttl > policy.max_secs
            || issued_at.checked_add(u64::from(ttl)).is_none()
        {
            return Err(Reason::Malformed);
        }
        let claims = SessionClaims { id, started_at, issued_at, ttl, bind };
        Ok(Session { link, policy, raw, len: len as u8, claims })
    }

    /// The link the session is chained to.
    pub fn link(&self) -> &Token {
        &self.link
    }

    /// The link's session policy.
    pub fn policy(&self) -> SessionPolicy {
        self.policy
    }

    /// The session part's claims.
    pub fn claims(&self) -> SessionClaims {
        self.claims
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.claims.id
    }

    /// When the hard maximum ends the session (exclusive): `started_at + max_secs`.
    pub fn max_at(&self) -> u64 {
        self.claims.started_at.saturating_add(u64::from(self.policy.max_secs))
    }

    /// Checks the session tag in constant time with the session secret of the
    /// link's key: `unknown_key` when the ring holds none, `bad_signature` when
    /// it does not match. The link's own signature is checked separately
    /// ([`Token::verify_signature`]).
    pub fn verify_mac(&self, ring: &KeyRing) -> Result<(), Reason> {
        let key = ring.session_key(self.link.key_id()).ok_or(Reason::UnknownKey)?;
        let body_len = usize::from(self.len) - TAG_LEN;
        let mut msg = [0u8; MAC_INPUT_LEN];
        let n = mac_input(self.link.as_bytes(), &self.raw[..body_len], &mut msg);
        if key.verify(&msg[..n], &self.raw[body_len..usize::from(self.len)]) {
            Ok(())
        } else {
            Err(Reason::BadSignature)
        }
    }

    /// The session's time checks, replacing the link's expiry, in order: the
    /// session started inside the link's validity window (`not_yet_valid`,
    /// `expired`), this credential is not from the future (`not_yet_valid`), the
    /// hard maximum from the start (`session_max`), this credential's ttl
    /// (`session_expired`) — each with the policy's leeway.
    pub fn check_time(&self, now: u64, policy: &Policy) -> Result<(), Reason> {
        let (now, leeway) = (u128::from(now), u128::from(policy.leeway_secs));
        let c = &self.claims;
        let started = u128::from(c.started_at);
        if started + leeway < u128::from(self.link.valid_from()) {
            return Err(Reason::NotYetValid);
        }
        if started >= u128::from(self.link.expires_at()) + leeway {
            return Err(Reason::Expired);
        }
        if now + leeway < u128::from(c.issued_at) {
            return Err(Reason::NotYetValid);
        }
        if now >= started + u128::from(self.policy.max_secs) + leeway {
            return Err(Reason::SessionMax);
        }
        if now >= u128::from(c.issued_at) + u128::from(c.ttl) + leeway {
            return Err(Reason::SessionExpired);
        }
        Ok(())
    }

    /// The client binding (`ip`): a session bound to a network admits only
    /// clients in it, and when the link's policy binds clients of this address
    /// family, the session must carry a binding at least that narrow.
    pub fn check_client(&self, client: Option<IpAddr>) -> Result<(), Reason> {
        let Some(client) = client.map(unmap) else {
            let required = self.policy.bind_v4 > 0 || self.policy.bind_v6 > 0;
            return if self.claims.bind.is_some() || required { Err(Reason::Ip) } else { Ok(()) };
        };
        let need = self.policy.bind_for(client);
        match self.claims.bind {
            Some(b) if !b.contains(client) => Err(Reason::Ip),
            Some(b) if b.prefix_len() < need => Err(Reason::Ip),
            None if need > 0 => Err(Reason::Ip),
            _ => Ok(()),
        }
    }

    /// Whether the link's own MAC is left to the session tag (`docs/token-format.md`
    /// § 9.4): true for a version-1 (HMAC) link. The session tag covers every byte of
    /// the link, its MAC included, and its secret derives from the link's HMAC secret,
    /// so whoever can tag a session over a link could have signed that link. An
    /// Ed25519 link's signature is always checked: its session secret is not its
    /// private key.
    pub fn tag_covers_link(&self) -> bool {
        self.link.algorithm() == Algorithm::HmacSha256
    }

    /// The link's key and, unless [`Session::tag_covers_link`], its signature:
    /// `unknown_key` when the ring holds no key of the link's id and algorithm,
    /// `bad_signature` when an Ed25519 link's signature fails.
    pub fn verify_link(&self, ring: &KeyRing) -> Result<(), Reason> {
        if !self.tag_covers_link() {
            return self.link.verify_signature(ring);
        }
        match ring.algorithm(self.link.key_id()) {
            Some(a) if a == self.link.algorithm() => Ok(()),
            _ => Err(Reason::UnknownKey),
        }
    }

    /// Every check of a session credential that the token crate can make, in
    /// order: the link's key and signature ([`Session::verify_link`]), session
    /// tag, session times, the link's scope, IP and country, the session's client
    /// binding. The edge adds its revocations (which match the link) and its
    /// staleness rule.
    pub fn check(&self, ring: &KeyRing, req: &Request<'_>, policy: &Policy) -> Result<(), Reason> {
        self.verify_link(ring)?;
        self.verify_mac(ring)?;
        self.check_time(req.now, policy)?;
        for check in [crate::ClaimCheck::Scope, crate::ClaimCheck::Ip, crate::ClaimCheck::Country] {
            self.link.check_one(check, req, policy)?;
        }
        self.check_client(req.client_ip)
    }

    /// A renewed credential: the same session (id, start, binding) issued again
    /// at `now` with lifetime `ttl`, clamped to the hard maximum.
    pub fn renew(&self, ring: &KeyRing, now: u64, ttl: u32) -> Result<String, ClaimsError> {
        let c =
            SessionClaims { issued_at: now.max(self.claims.started_at), ttl: clamp_ttl(self, now, ttl), ..self.claims };
        issue(&self.link, &c, ring)
    }
}

/// `ttl` limited so that `now + ttl` does not pass the session's hard maximum (at least 1).
fn clamp_ttl(s: &Session, now: u64, ttl: u32) -> u32 {
    let left = s.max_at().saturating_sub(now);
    u32::try_from(left).unwrap_or(u32::MAX).min(ttl).max(1)
}

/// Verifies a session credential for a request: [`Session::parse`], then
/// [`Session::check`]. Returns the verified session, whose link the caller then
/// checks against its revocations.
pub fn verify_session(credential: &str, ring: &KeyRing, req: &Request<'_>, policy: &Policy) -> Result<Session, Reason> {
    let session = Session::parse(credential)?;
    session.check(ring, req, policy)?;
    Ok(session)
}

/// Issues a session credential chained to `link` (which must carry a session
/// policy and should have been verified by the caller): the link token string,
/// the separator and the session part tagged with the session secret of the
/// link's key.
pub fn issue(link: &Token, claims: &SessionClaims, ring: &KeyRing) -> Result<String, ClaimsError> {
    let policy = link.session_policy().ok_or(ClaimsError::NoSessionPolicy)?;
    let key = ring.session_key(link.key_id()).ok_or(ClaimsError::NoSessionSecret)?;
    // The start is checked against the link's window by the verifier (with its leeway).
    if claims.issued_at < claims.started_at
        || claims.ttl == 0
        || claims.ttl > policy.max_secs
        || claims.issued_at.checked_add(u64::from(claims.ttl)).is_none()
    {
        return Err(ClaimsError::SessionTimes);
    }
    let mut body = Vec::with_capacity(MAX_SESSION_RAW_LEN);
    body.push(SESSION_VERSION);
    body.push(if claims.bind.is_some() { BIND } else { 0 });
    body.extend_from_slice(&claims.id.0.to_be_bytes());
    body.extend_from_slice(&claims.started_at.to_be_bytes());
    body.extend_from_slice(&claims.issued_at.to_be_bytes());
    body.extend_from_slice(&claims.ttl.to_be_bytes());
    if let Some(b) = &claims.bind {
        write_ip(b, &mut body);
    }
    let mut msg = [0u8; MAC_INPUT_LEN];
    let n = mac_input(link.as_bytes(), &body, &mut msg);
    body.extend_from_slice(&key.tag(&msg[..n]));
    let mut out = String::with_capacity(MAX_SESSION_LEN);
    b64::encode_into(link.as_bytes(), &mut out);
    out.push(SESSION_SEPARATOR);
    b64::encode_into(&body, &mut out);
    Ok(out)
}

/// Starts a session from a verified link at `now`: a new credential with
/// `started_at = issued_at = now`, lifetime `ttl` (clamped to the policy's
/// maximum) and, when the policy binds clients of the client's address family,
/// the client's network of that prefix length.
pub fn start(
    link: &Token,
    id: SessionId,
    now: u64,
    ttl: u32,
    client: Option<IpAddr>,
    ring: &KeyRing,
) -> Result<String, ClaimsError> {
    let policy = link.session_policy().ok_or(ClaimsError::NoSessionPolicy)?;
    let bind = match client {
        Some(ip) if policy.bind_for(ip) > 0 => {
            Some(IpBinding::for_client(ip, policy.bind_v4.max(1), policy.bind_v6.max(1))?)
        }
        _ => None,
    };
    let claims = SessionClaims { id, started_at: now, issued_at: now, ttl: ttl.clamp(1, policy.max_secs), bind };
    issue(link, &claims, ring)
}

/// Writes `u16 len(link) || link || body` into `out`; returns its length.
fn mac_input(link: &[u8], body: &[u8], out: &mut [u8; MAC_INPUT_LEN]) -> usize {
    // `Token::parse` bounds the link to MAX_RAW_LEN, the session to MAX_SESSION_RAW_LEN.
    let (link, body) = (&link[..link.len().min(MAX_RAW_LEN)], &body[..body.len().min(MAX_SESSION_RAW_LEN)]);
    out[..2].copy_from_slice(&(link.len() as u16).to_be_bytes());
    out[2..2 + link.len()].copy_from_slice(link);
    out[2 + link.len()..2 + link.len() + body.len()].copy_from_slice(body);
    2 + link.len() + body.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Claims, Ed25519Secret, KEY_LEN, MAX_SESSION_SECS, Scope, SecretKey, TokenId, sign, sign_with_session};

    const T0: u64 = 1_700_000_000;
    const POLICY: SessionPolicy = SessionPolicy { idle_secs: 60, max_secs: 3600, bind_v4: 24, bind_v6: 0 };

    fn claims(key_id: u32) -> Claims {
        Claims {
            key_id,
            token_id: TokenId::from_u64(0x5e55),
            issued_at: T0,
            not_before: None,
            expires_at: T0 + 30,
            scope: Scope::parse("/live/ch1/").unwrap(),
            ip: None,
            countries: None,
            subject: Some("viewer-1".into()),
            channel: Some("email".into()),
        }
    }

    /// The minter's ring (HMAC key 1, Ed25519 key 2) and an edge's (the Ed25519
    /// public key with the session secret pushed to it).
    fn rings() -> (KeyRing, KeyRing) {
        let seed = Ed25519Secret::from_bytes([2; 32]);
        let mut minter = KeyRing::new();
        minter.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
        minter.insert_ed25519_secret(2, &seed);
        let mut edge = KeyRing::new();
        edge.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
        edge.insert_ed25519(2, &seed.public()).unwrap();
        assert!(!edge.has_session_secret(2), "a public key alone gives no session secret");
        assert!(edge.set_session_secret(2, &derive(&[2; 32])));
        (minter, edge)
    }

    fn derive(material: &[u8; 32]) -> SecretKey {
        crate::derive_session_secret(material)
    }

    fn link(key_id: u32, ring: &KeyRing) -> Token {
        Token::parse(&sign_with_session(&claims(key_id), Some(&POLICY), ring).unwrap()).unwrap()
    }

    fn req(now: u64, client: &str) -> Request<'static> {
        Request { path: "/live/ch1/720p/seg9.ts", client_ip: Some(client.parse().unwrap()), country: None, now }
    }

    const CLIENT: &str = "203.0.113.7";

    #[test]
    fn a_session_outlives_its_link_up_to_idle_and_max() {
        let (minter, edge) = rings();
        for key_id in [1, 2] {
            let link = link(key_id, &minter);
            let cred = start(&link, SessionId(42), T0 + 5, POLICY.idle_secs, CLIENT.parse().ok(), &edge).unwrap();
            let p = Policy::default();
            // The link alone is expired at T0 + 40; the session admits.
            assert_eq!(
                crate::verify(&cred[..cred.find('.').unwrap()], &edge, &req(T0 + 40, CLIENT), &p).unwrap_err(),
                Reason::Expired
            );
            let s = verify_session(&cred, &edge, &req(T0 + 40, CLIENT), &p).unwrap();
            assert_eq!(s.id(), SessionId(42));
            assert_eq!(s.claims().bind.unwrap().to_string(), "203.0.113.0/24");
            assert_eq!(s.link().subject(), Some("viewer-1"));
            // Idle: not renewed, dead after issued_at + 60 + leeway.
            assert_eq!(verify_session(&cred, &edge, &req(T0 + 5 + 64, CLIENT), &p).map(|_| ()), Ok(()));
            assert_eq!(
                verify_session(&cred, &edge, &req(T0 + 5 + 65, CLIENT), &p).unwrap_err(),
                Reason::SessionExpired
            );
            // Renewed every 50 s, it lives to the hard maximum and no further.
            let mut cur = s;
            let mut now = T0 + 5;
            while now + 50 < T0 + 5 + 3600 {
                now += 50;
                let renewed = cur.renew(&edge, now, POLICY.idle_secs).unwrap();
                cur = verify_session(&renewed, &edge, &req(now, CLIENT), &p).unwrap();
                assert_eq!(cur.id(), SessionId(42));
                assert_eq!(cur.claims().started_at, T0 + 5);
            }
            let last = cur.renew(&edge, now, POLICY.idle_secs).unwrap();
            assert!(
                Session::parse(&last).unwrap().claims().expires_at() <= T0 + 5 + 3600,
                "renewal clamps to the maximum"
            );
            assert_eq!(
                verify_session(&last, &edge, &req(T0 + 5 + 3600 + 5, CLIENT), &p).unwrap_err(),
                Reason::SessionMax
            );
        }
    }

    #[test]
    fn tampering_forgery_and_binding() {
        let (minter, edge) = rings();
        let p = Policy::default();
        let link = link(2, &minter);
        let cred = start(&link, SessionId(7), T0 + 1, 60, CLIENT.parse().ok(), &edge).unwrap();
        let now = T0 + 50;
        // Any flipped bit in the session part: malformed or bad_signature, never admitted.
        let (l, part) = cred.split_once('.').unwrap();
        let mut raw = vec![0u8; MAX_SESSION_RAW_LEN];
        let n = b64::decode_into(part.as_bytes(), &mut raw).unwrap();
        for i in 0..n {
            for bit in 0..8 {
                let mut bad = raw[..n].to_vec();
                bad[i] ^= 1 << bit;
                let mut s = format!("{l}.");
                b64::encode_into(&bad, &mut s);
                let r = verify_session(&s, &edge, &req(now, CLIENT), &p).unwrap_err();
                assert!(matches!(r, Reason::Malformed | Reason::BadSignature | Reason::Ip), "byte {i} bit {bit}: {r}");
                if i >= n - TAG_LEN {
                    assert_eq!(r, Reason::BadSignature, "tag byte {i}");
                }
            }
        }
        // A session part moved onto another link (same key, same policy) does not verify.
        let mut other = claims(2);
        other.token_id = TokenId::from_u64(0x0bad);
        let other = sign_with_session(&other, Some(&POLICY), &minter).unwrap();
        assert_eq!(
            verify_session(&format!("{other}.{part}"), &edge, &req(now, CLIENT), &p).unwrap_err(),
            Reason::BadSignature
        );
        // A secret that is not the key's: bad_signature; none at all: unknown_key.
        let mut wrong = edge.clone();
        wrong.set_session_secret(2, &SecretKey::from_bytes([9; KEY_LEN]));
        assert_eq!(verify_session(&cred, &wrong, &req(now, CLIENT), &p).unwrap_err(), Reason::BadSignature);
        let mut public_only = KeyRing::new();
        public_only.insert_ed25519(2, &Ed25519Secret::from_bytes([2; 32]).public()).unwrap();
        assert_eq!(verify_session(&cred, &public_only, &req(now, CLIENT), &p).unwrap_err(), Reason::UnknownKey);
        // The key retired: the link's key is gone, so is its session secret.
        let mut retired = edge.clone();
        retired.remove(2);
        assert!(!retired.has_session_secret(2));
        assert_eq!(verify_session(&cred, &retired, &req(now, CLIENT), &p).unwrap_err(), Reason::UnknownKey);
        // Binding: another /24 is refused; an unknown client too.
        assert_eq!(verify_session(&cred, &edge, &req(now, "203.0.113.200"), &p).map(|_| ()), Ok(()));
        assert_eq!(verify_session(&cred, &edge, &req(now, "198.51.100.1"), &p).unwrap_err(), Reason::Ip);
        let unknown = Request { client_ip: None, ..req(now, CLIENT) };
        assert_eq!(verify_session(&cred, &edge, &unknown, &p).unwrap_err(), Reason::Ip);
        // An unbound session where the policy binds IPv4 clients: refused.
        let unbound = start(&link, SessionId(8), T0 + 1, 60, None, &edge).unwrap();
        assert_eq!(verify_session(&unbound, &edge, &req(now, CLIENT), &p).unwrap_err(), Reason::Ip);
        // ...but fine for an IPv6 client, which this policy does not bind.
        assert_eq!(verify_session(&unbound, &edge, &req(now, "2001:db8::1"), &p).map(|_| ()), Ok(()));
        // Out of scope: the link's scope still applies.
        let off = Request { path: "/live/ch2/x.ts", ..req(now, CLIENT) };
        assert_eq!(verify_session(&cred, &edge, &off, &p).unwrap_err(), Reason::Scope);
    }

    /// An HMAC link's MAC is left to the session tag, which covers every byte of the link:
    /// any change to the link under a session part is refused. Only a holder of the
    /// session secret, derived from the link's HMAC secret, can tag a session over a
    /// link whose MAC fails — who could sign that link too. An Ed25519 link's signature
    /// is checked whatever the session tag says.
    #[test]
    fn the_session_tag_stands_for_an_hmac_links_mac_not_for_an_ed25519_signature() {
        let (minter, edge) = rings();
        let p = Policy::default();
        let now = T0 + 50;
        for key_id in [1, 2] {
            let link = link(key_id, &minter);
            let cred = start(&link, SessionId(7), T0 + 1, 60, CLIENT.parse().ok(), &edge).unwrap();
            assert!(verify_session(&cred, &edge, &req(now, CLIENT), &p).is_ok());
            let (l, part) = cred.split_once('.').unwrap();
            let bytes = link.as_bytes().to_vec();
            assert_eq!(b64::decode_into(l.as_bytes(), &mut [0u8; MAX_RAW_LEN]), Some(bytes.len()));
            // Every bit of the link flipped, the session part kept: never admitted.
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut bad = bytes.clone();
                    bad[i] ^= 1 << bit;
                    let mut s = String::new();
                    b64::encode_into(&bad, &mut s);
                    s.push('.');
                    s.push_str(part);
                    assert!(
                        verify_session(&s, &edge, &req(now, CLIENT), &p).is_err(),
                        "key {key_id}: byte {i} bit {bit}"
                    );
                }
            }
            // The link's MAC or signature altered, the session tagged over it with the session secret.
            let mut altered = bytes.clone();
            *altered.last_mut().unwrap() ^= 1;
            let mut text = String::new();
            b64::encode_into(&altered, &mut text);
            let altered = Token::parse(&text).unwrap();
            assert_eq!(altered.verify_signature(&edge), Err(Reason::BadSignature));
            let c = SessionClaims { id: SessionId(7), started_at: T0 + 1, issued_at: T0 + 1, ttl: 60, bind: None };
            let tagged =
                issue(&altered, &SessionClaims { bind: Session::parse(&cred).unwrap().claims().bind, ..c }, &edge)
                    .unwrap();
            let verdict = verify_session(&tagged, &edge, &req(now, CLIENT), &p).map(|s| s.tag_covers_link());
            match key_id {
                1 => assert_eq!(verdict, Ok(true), "HMAC: the session tag stands for the link's MAC"),
                _ => assert_eq!(verdict, Err(Reason::BadSignature), "Ed25519: the signature is checked"),
            }
        }
    }

    #[test]
    fn a_session_must_start_inside_its_link() {
        let (minter, edge) = rings();
        let p = Policy::default();
        let link = link(1, &minter);
        let late = SessionClaims { id: SessionId(1), started_at: T0 + 35, issued_at: T0 + 35, ttl: 60, bind: None };
        let cred = issue(&link, &late, &edge).unwrap();
        assert_eq!(verify_session(&cred, &edge, &req(T0 + 36, "2001:db8::1"), &p).unwrap_err(), Reason::Expired);
        let early = SessionClaims { started_at: T0 - 6, issued_at: T0, ..late };
        let cred = issue(&link, &early, &edge).unwrap();
        assert_eq!(verify_session(&cred, &edge, &req(T0 + 1, "2001:db8::1"), &p).unwrap_err(), Reason::NotYetValid);
        let future = SessionClaims { started_at: T0, issued_at: T0 + 100, ..late };
        let cred = issue(&link, &future, &edge).unwrap();
        assert_eq!(verify_session(&cred, &edge, &req(T0 + 1, "2001:db8::1"), &p).unwrap_err(), Reason::NotYetValid);
        // Issuing refuses what could never verify.
        assert_eq!(issue(&link, &SessionClaims { ttl: 3601, ..late }, &edge), Err(ClaimsError::SessionTimes));
        assert_eq!(issue(&link, &SessionClaims { ttl: 0, ..late }, &edge), Err(ClaimsError::SessionTimes));
        let plain = Token::parse(&sign(&claims(1), &minter).unwrap()).unwrap();
        assert_eq!(start(&plain, SessionId(1), T0, 60, None, &edge), Err(ClaimsError::NoSessionPolicy));
    }

    #[test]
    fn structure_faults_are_malformed() {
        let (minter, edge) = rings();
        let link = link(1, &minter);
        let cred = start(&link, SessionId(1), T0, 60, None, &edge).unwrap();
        let (l, part) = cred.split_once('.').unwrap();
        let plain = sign(&claims(1), &minter).unwrap();
        for bad in [
            format!("{l}."),
            format!("{l}.{part}."),
            format!("{l}.{part}A"),
            format!("{l}{part}"),
            format!(".{part}"),
            format!("{plain}.{part}"),
            format!("{l}.{}", &part[..part.len() - 2]),
            format!("{l}.{}", "A".repeat(MAX_SESSION_LEN)),
        ] {
            assert_eq!(Session::parse(&bad).unwrap_err(), Reason::Malformed, "{bad}");
        }
        assert!(is_session(&cred));
        assert!(!is_session(l));
        let s = Session::parse(&cred).unwrap();
        assert!(!format!("{s:?}").contains(part), "Debug never shows the credential");
    }

    #[test]
    fn session_policies_travel_in_both_link_versions() {
        let (minter, _) = rings();
        for key_id in [1, 2] {
            let t = link(key_id, &minter);
            assert_eq!(t.session_policy(), Some(POLICY));
            let plain = Token::parse(&sign(&claims(key_id), &minter).unwrap()).unwrap();
            assert_eq!(plain.session_policy(), None);
        }
        for bad in [
            SessionPolicy { idle_secs: 0, ..POLICY },
            SessionPolicy { idle_secs: 3601, ..POLICY },
            SessionPolicy { max_secs: MAX_SESSION_SECS + 1, ..POLICY },
            SessionPolicy { bind_v4: 33, ..POLICY },
            SessionPolicy { bind_v6: 129, ..POLICY },
        ] {
            assert!(sign_with_session(&claims(1), Some(&bad), &minter).is_err(), "{bad:?}");
        }
    }
}
