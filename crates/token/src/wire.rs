//! The byte format: encoding signed claims, and parsing a token string into a
//! [`Token`] view without allocating.
//!
//! Layout (all integers big-endian; `docs/token-format.md` is the normative spec).
//! Version 1 ends with a 16-byte HMAC tag, version 2 with a 64-byte Ed25519
//! signature; the body is the same:
//!
//! ```text
//! version u8 (1|2) | flags u8 | key_id u32 | token_id [8] | issued_at u64 | ttl u32
//! [nbf_offset u32]                          if flags & NBF
//! scope_len u8 (1..=255) | scope [scope_len]
//! [family u8 (4|6) | prefix u8 | addr [4|16]] if flags & IP
//! [count u8 (1..=32) | codes [2*count]]     if flags & COUNTRIES
//! [len u8 (1..=64) | subject [len]]         if flags & SUBJECT
//! [len u8 (1..=32) | channel [len]]         if flags & CHANNEL
//! [ext u8 (bit 0 SESSION, others 0)]        if flags & EXT
//! [idle u32 | max u32 | bind_v4 u8 | bind_v6 u8] if ext & SESSION
//! tag [16] = HMAC-SHA256(key, every byte before it)[..16]     version 1
//! sig [64] = Ed25519-Sign(private key, every byte before it)   version 2
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::b64;
use crate::claims::{
    Claims, ClaimsError, Country, CountryRule, IpBinding, KeyId, MAX_COUNTRIES, MAX_SCOPE_LEN, MAX_TTL_SECS, Scope,
    SessionPolicy, TOKEN_ID_LEN, TokenId, scope_admits, unmap, valid_channel, valid_subject,
};
use crate::keys::{Algorithm, KeyRing, SIGNATURE_LEN, TAG_LEN};
use crate::reason::Reason;

/// The format version of HMAC-SHA256 tokens.
pub const VERSION: u8 = 1;

/// The format version of Ed25519 tokens.
pub const VERSION_ED25519: u8 = 2;

/// Flag bits.
pub(crate) mod flag {
    pub(crate) const PREFIX: u8 = 1 << 0;
    pub(crate) const NBF: u8 = 1 << 1;
    pub(crate) const IP: u8 = 1 << 2;
    pub(crate) const COUNTRIES: u8 = 1 << 3;
    pub(crate) const COUNTRY_DENY: u8 = 1 << 4;
    pub(crate) const SUBJECT: u8 = 1 << 5;
    pub(crate) const CHANNEL: u8 = 1 << 6;
    /// An extension byte follows the channel.
    pub(crate) const EXT: u8 = 1 << 7;
}

/// Extension flag bits (the byte present when `flags & EXT`).
pub(crate) mod ext {
    /// A session policy follows.
    pub(crate) const SESSION: u8 = 1 << 0;
    /// Every bit not defined yet: set, the token is `malformed`.
    pub(crate) const RESERVED: u8 = !SESSION;
}

/// Length of the session policy block.
const SESSION_POLICY_LEN: usize = 4 + 4 + 1 + 1;

const HEADER_LEN: usize = 1 + 1 + 4 + TOKEN_ID_LEN + 8 + 4;

/// Largest body (every byte before the tag), in bytes.
const MAX_BODY_LEN: usize = HEADER_LEN
    + 4
    + (1 + MAX_SCOPE_LEN)
    + (2 + 16)
    + (1 + 2 * MAX_COUNTRIES)
    + (1 + 64)
    + (1 + 32)
    + 1
    + SESSION_POLICY_LEN;

/// Largest decoded token, in bytes: the largest body and an Ed25519 signature.
pub const MAX_RAW_LEN: usize = MAX_BODY_LEN + SIGNATURE_LEN;

/// Longest token string accepted; anything longer is `malformed` before decoding.
pub const MAX_TOKEN_LEN: usize = b64::encoded_len(MAX_RAW_LEN);

/// Signs claims with the key their `key_id` names in `ring`: a version-1
/// token for an HMAC key, version 2 for an Ed25519 key (whose private half the
/// ring must hold).
pub fn sign(claims: &Claims, ring: &KeyRing) -> Result<String, ClaimsError> {
    sign_with_session(claims, None, ring)
}

/// Signs claims like [`sign`], with a session policy when `session` is given:
/// edges may then extend playback past the link's expiry with session
/// credentials, within that policy ([`crate::session`]).
pub fn sign_with_session(
    claims: &Claims,
    session: Option<&SessionPolicy>,
    ring: &KeyRing,
) -> Result<String, ClaimsError> {
    let key = ring.get(claims.key_id).ok_or(ClaimsError::UnknownKey)?;
    let claims = claims.validated()?;
    if let Some(p) = session {
        p.validate()?;
    }
    let mut raw = Vec::with_capacity(192);
    write_body(&claims, session, key.algorithm().version(), &mut raw);
    let tag = key.sign(&raw).ok_or(ClaimsError::PublicOnly)?;
    raw.extend_from_slice(&tag);
    let mut out = String::with_capacity(b64::encoded_len(raw.len()));
    b64::encode_into(&raw, &mut out);
    Ok(out)
}

fn write_body(c: &Claims, session: Option<&SessionPolicy>, version: u8, raw: &mut Vec<u8>) {
    let mut flags = 0;
    if c.scope.is_prefix() {
        flags |= flag::PREFIX;
    }
    if c.not_before.is_some() {
        flags |= flag::NBF;
    }
    if c.ip.is_some() {
        flags |= flag::IP;
    }
    match &c.countries {
        Some(CountryRule::Allow(_)) => flags |= flag::COUNTRIES,
        Some(CountryRule::Deny(_)) => flags |= flag::COUNTRIES | flag::COUNTRY_DENY,
        None => {}
    }
    if c.subject.is_some() {
        flags |= flag::SUBJECT;
    }
    if c.channel.is_some() {
        flags |= flag::CHANNEL;
    }
    if session.is_some() {
        flags |= flag::EXT;
    }
    raw.push(version);
    raw.push(flags);
    raw.extend_from_slice(&c.key_id.to_be_bytes());
    raw.extend_from_slice(&c.token_id.0);
    raw.extend_from_slice(&c.issued_at.to_be_bytes());
    // `validated` bounds the lifetime to MAX_TTL_SECS, which fits u32.
    let ttl = (c.expires_at - c.issued_at) as u32;
    raw.extend_from_slice(&ttl.to_be_bytes());
    if let Some(nbf) = c.not_before {
        raw.extend_from_slice(&((nbf - c.issued_at) as u32).to_be_bytes());
    }
    let scope = c.scope.path().as_bytes();
    raw.push(scope.len() as u8);
    raw.extend_from_slice(scope);
    if let Some(ip) = &c.ip {
        write_ip(ip, raw);
    }
    if let Some(rule) = &c.countries {
        raw.push(rule.countries().len() as u8);
        for country in rule.countries() {
            raw.extend_from_slice(&country.bytes());
        }
    }
    for field in [&c.subject, &c.channel].into_iter().flatten() {
        raw.push(field.len() as u8);
        raw.extend_from_slice(field.as_bytes());
    }
    if let Some(p) = session {
        raw.push(ext::SESSION);
        raw.extend_from_slice(&p.idle_secs.to_be_bytes());
        raw.extend_from_slice(&p.max_secs.to_be_bytes());
        raw.extend_from_slice(&[p.bind_v4, p.bind_v6]);
    }
}

/// The claim checks of [`Token::check`], in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClaimCheck {
    /// The validity window, with the policy's leeway at both ends (`expired`, `not_yet_valid`).
    Time,
    /// The request path within the scope (`scope`).
    Scope,
    /// The client address within the IP binding, if any (`ip`).
    Ip,
    /// The client's country admitted by the country rule, if any (`geo`).
    Country,
}

impl ClaimCheck {
    /// Every claim check, in the order [`Token::check`] runs them.
    pub const ALL: [ClaimCheck; 4] = [ClaimCheck::Time, ClaimCheck::Scope, ClaimCheck::Ip, ClaimCheck::Country];
}

/// A parsed, **not yet verified** token: the decoded bytes held inline (no
/// heap) with the offsets of each field. Produced by [`Token::parse`] and
/// returned by [`crate::verify`] once every check has passed.
#[derive(Clone)]
pub struct Token {
    buf: [u8; MAX_RAW_LEN],
    len: u16,
    algorithm: Algorithm,
    flags: u8,
    key_id: KeyId,
    token_id: TokenId,
    issued_at: u64,
    ttl: u32,
    nbf_offset: u32,
    scope: (u16, u8),
    ip: Option<IpBinding>,
    countries: (u16, u8),
    subject: (u16, u8),
    channel: (u16, u8),
    session: Option<SessionPolicy>,
}

impl core::fmt::Debug for Token {
    /// Shows the claims (none is secret), never the MAC or the token string.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Token")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("token_id", &self.token_id)
            .field("issued_at", &self.issued_at)
            .field("not_before", &self.not_before())
            .field("expires_at", &self.expires_at())
            .field("scope", &self.scope_path())
            .field("prefix", &self.is_prefix())
            .field("subject", &self.subject())
            .field("channel", &self.channel())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// A read cursor over the decoded bytes; every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reason> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(Reason::Malformed)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Reason> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reason> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A length-prefixed field of `1..=max` bytes; returns (offset, len).
    fn field(&mut self, max: usize) -> Result<(u16, u8), Reason> {
        let n = self.u8()?;
        if n == 0 || usize::from(n) > max {
            return Err(Reason::Malformed);
        }
        let start = self.pos as u16;
        self.take(usize::from(n))?;
        Ok((start, n))
    }
}

impl Token {
    /// Decodes and structurally validates a token string. Checks the MAC,
    /// time and bindings not at all: use [`crate::verify`] for that.
    pub fn parse(token: &str) -> Result<Token, Reason> {
        if token.len() > MAX_TOKEN_LEN || token.len() < b64::encoded_len(HEADER_LEN + 2 + TAG_LEN) {
            return Err(Reason::Malformed);
        }
        let mut buf = [0u8; MAX_RAW_LEN];
        let len = b64::decode_into(token.as_bytes(), &mut buf).ok_or(Reason::Malformed)?;
        // The version says how long the tag is, so it is read first.
        let algorithm = match buf[0] {
            VERSION => Algorithm::HmacSha256,
            VERSION_ED25519 => Algorithm::Ed25519,
            _ => return Err(Reason::Malformed),
        };
        let body_len = len.checked_sub(algorithm.tag_len()).ok_or(Reason::Malformed)?;
        let mut c = Cursor { buf: &buf[..body_len], pos: 0 };
        let [_, flags] = c.array()?;
        if flags & flag::COUNTRY_DENY != 0 && flags & flag::COUNTRIES == 0 {
            return Err(Reason::Malformed);
        }
        let key_id = u32::from_be_bytes(c.array()?);
        let token_id = TokenId(c.array()?);
        let issued_at = u64::from_be_bytes(c.array()?);
        let ttl = u32::from_be_bytes(c.array()?);
        if ttl == 0 || u64::from(ttl) > MAX_TTL_SECS || issued_at.checked_add(u64::from(ttl)).is_none() {
            return Err(Reason::Malformed);
        }
        let nbf_offset = if flags & flag::NBF != 0 { u32::from_be_bytes(c.array()?) } else { 0 };
        if nbf_offset >= ttl {
            return Err(Reason::Malformed);
        }
        let scope = c.field(MAX_SCOPE_LEN)?;
        let scope_bytes = &c.buf[usize::from(scope.0)..usize::from(scope.0) + usize::from(scope.1)];
        // Canonical paths are visible ASCII starting with '/'; a prefix ends with '/'.
        if scope_bytes[0] != b'/'
            || !scope_bytes.iter().all(|b| (0x21..=0x7e).contains(b))
            || (flags & flag::PREFIX != 0) != (scope_bytes[scope_bytes.len() - 1] == b'/')
        {
            return Err(Reason::Malformed);
        }
        let ip = if flags & flag::IP != 0 { Some(parse_ip(&mut c)?) } else { None };
        let countries = if flags & flag::COUNTRIES != 0 {
            let n = c.u8()?;
            if n == 0 || usize::from(n) > MAX_COUNTRIES {
                return Err(Reason::Malformed);
            }
            let start = c.pos as u16;
            let codes = c.take(2 * usize::from(n))?;
            // Upper-case letters, strictly ascending (sorted, no duplicates).
            if !codes.iter().all(u8::is_ascii_uppercase) || !codes.chunks_exact(2).is_sorted_by(|a, b| a < b) {
                return Err(Reason::Malformed);
            }
            (start, n)
        } else {
            (0, 0)
        };
        let subject = if flags & flag::SUBJECT != 0 { c.field(64)? } else { (0, 0) };
        if flags & flag::SUBJECT != 0 && !valid_subject(range(c.buf, subject)) {
            return Err(Reason::Malformed);
        }
        let channel = if flags & flag::CHANNEL != 0 { c.field(32)? } else { (0, 0) };
        if flags & flag::CHANNEL != 0 && !valid_channel(range(c.buf, channel)) {
            return Err(Reason::Malformed);
        }
        let session = if flags & flag::EXT != 0 {
            // Canonical: an extension byte is present only when it says something.
            let ext = c.u8()?;
            if ext == 0 || ext & ext::RESERVED != 0 {
                return Err(Reason::Malformed);
            }
            let p = SessionPolicy {
                idle_secs: u32::from_be_bytes(c.array()?),
                max_secs: u32::from_be_bytes(c.array()?),
                bind_v4: c.u8()?,
                bind_v6: c.u8()?,
            };
            p.validate().map_err(|_| Reason::Malformed)?;
            Some(p)
        } else {
            None
        };
        if c.pos != c.buf.len() {
            return Err(Reason::Malformed);
        }
        Ok(Token {
            buf,
            len: len as u16,
            algorithm,
            flags,
            key_id,
            token_id,
            issued_at,
            ttl,
            nbf_offset,
            scope,
            ip,
            countries,
            subject,
            channel,
            session,
        })
    }

    /// Checks the tag against the ring: an HMAC tag in constant time, an
    /// Ed25519 signature strictly (canonical `S`; neither the public key nor
    /// `R` of small order). A key id whose key in the ring is of the other
    /// algorithm is `unknown_key`: the ring holds no key that could verify it.
    pub fn verify_signature(&self, ring: &KeyRing) -> Result<(), Reason> {
        let key = ring.get(self.key_id).filter(|k| k.algorithm() == self.algorithm).ok_or(Reason::UnknownKey)?;
        let (body, tag) = self.as_bytes().split_at(usize::from(self.len) - self.algorithm.tag_len());
        if key.verify(body, tag) { Ok(()) } else { Err(Reason::BadSignature) }
    }

    /// The decoded token, body and tag: every byte the token string carries.
    /// Not secret on its own, but it is the bearer credential: never log it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The algorithm the token is signed with (its format version).
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks time window, scope, IP and country, in that order
    /// ([`ClaimCheck::ALL`]), stopping at the first failure.
    pub fn check(&self, req: &crate::Request<'_>, policy: &crate::Policy) -> Result<(), Reason> {
        for check in ClaimCheck::ALL {
            self.check_one(check, req, policy)?;
        }
        Ok(())
    }

    /// One of [`Token::check`]'s checks, on its own (a verifier that reports
    /// each check runs them in [`ClaimCheck::ALL`]'s order).
    #[inline]
    pub fn check_one(&self, check: ClaimCheck, req: &crate::Request<'_>, policy: &crate::Policy) -> Result<(), Reason> {
        match check {
            ClaimCheck::Time => {
                // Unbounded arithmetic (§ 4): `expires_at + leeway` may pass 2^64 - 1.
                let (now, leeway) = (u128::from(req.now), u128::from(policy.leeway_secs));
                if now >= u128::from(self.expires_at()) + leeway {
                    return Err(Reason::Expired);
                }
                if now + leeway < u128::from(self.valid_from()) {
                    return Err(Reason::NotYetValid);
                }
            }
            ClaimCheck::Scope => {
                if !scope_admits(self.is_prefix(), self.scope_path(), req.path) {
                    return Err(Reason::Scope);
                }
            }
            ClaimCheck::Ip => {
                if let Some(ip) = self.ip {
                    match req.client_ip {
                        Some(client) if ip.contains(unmap(client)) => {}
                        _ => return Err(Reason::Ip),
                    }
                }
            }
            ClaimCheck::Country => {
                if self.has_country_rule() {
                    let deny = self.flags & flag::COUNTRY_DENY != 0;
                    let admitted = match req.country {
                        Some(country) => self.country_codes().chunks_exact(2).any(|c| c == country.bytes()) != deny,
                        None => policy.unknown_country == crate::UnknownCountry::Allow,
                    };
                    if !admitted {
                        return Err(Reason::Geo);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the token carries a country rule (so the verifier needs the
    /// client's country); allocation-free, unlike [`Token::country_rule`].
    #[inline]
    pub fn has_country_rule(&self) -> bool {
        self.flags & flag::COUNTRIES != 0
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The token id.
    pub fn token_id(&self) -> TokenId {
        self.token_id
    }

    /// Issue time, Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// The not-before time if the token carries one.
    pub fn not_before(&self) -> Option<u64> {
        (self.flags & flag::NBF != 0).then(|| self.issued_at + u64::from(self.nbf_offset))
    }

    /// The first second the token is valid: not-before, or the issue time.
    pub fn valid_from(&self) -> u64 {
        self.issued_at + u64::from(self.nbf_offset)
    }

    /// Expiry, Unix seconds (exclusive).
    pub fn expires_at(&self) -> u64 {
        self.issued_at + u64::from(self.ttl)
    }

    /// Whether the scope is a prefix.
    pub fn is_prefix(&self) -> bool {
        self.flags & flag::PREFIX != 0
    }

    /// The scope path (canonical).
    pub fn scope_path(&self) -> &str {
        as_str(range(&self.buf, self.scope))
    }

    /// The IP binding.
    pub fn ip(&self) -> Option<IpBinding> {
        self.ip
    }

    /// The subject, if any.
    pub fn subject(&self) -> Option<&str> {
        (self.flags & flag::SUBJECT != 0).then(|| as_str(range(&self.buf, self.subject)))
    }

    /// The session policy the link carries, if any: whether, and for how long,
    /// an edge may extend playback past the link's expiry ([`crate::session`]).
    pub fn session_policy(&self) -> Option<SessionPolicy> {
        self.session
    }

    /// The share channel, if any.
    pub fn channel(&self) -> Option<&str> {
        (self.flags & flag::CHANNEL != 0).then(|| as_str(range(&self.buf, self.channel)))
    }

    fn country_codes(&self) -> &[u8] {
        let (start, n) = self.countries;
        &self.buf[usize::from(start)..usize::from(start) + 2 * usize::from(n)]
    }

    /// The country rule, if any (allocates; for inspection, not the hot path).
    pub fn country_rule(&self) -> Option<CountryRule> {
        if self.flags & flag::COUNTRIES == 0 {
            return None;
        }
        let list = self.country_codes().chunks_exact(2).filter_map(|c| Country::new([c[0], c[1]])).collect();
        Some(if self.flags & flag::COUNTRY_DENY != 0 { CountryRule::Deny(list) } else { CountryRule::Allow(list) })
    }

    /// All claims as owned values (allocates; for inspection and `stile explain`).
    pub fn claims(&self) -> Claims {
        let path = self.scope_path().to_owned();
        Claims {
            key_id: self.key_id,
            token_id: self.token_id,
            issued_at: self.issued_at,
            not_before: self.not_before(),
            expires_at: self.expires_at(),
            scope: if self.is_prefix() { Scope::Prefix(path) } else { Scope::Exact(path) },
            ip: self.ip,
            countries: self.country_rule(),
            subject: self.subject().map(str::to_owned),
            channel: self.channel().map(str::to_owned),
        }
    }
}

fn range(buf: &[u8], (start, len): (u16, u8)) -> &[u8] {
    &buf[usize::from(start)..usize::from(start) + usize::from(len)]
}

/// Fields were checked to be ASCII at parse time.
fn as_str(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or("")
}

/// An IP binding as § 3 writes it: family, prefix, address (shared with session parts).
pub(crate) fn write_ip(ip: &IpBinding, raw: &mut Vec<u8>) {
    match ip.addr() {
        IpAddr::V4(a) => {
            raw.extend_from_slice(&[4, ip.prefix_len()]);
            raw.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            raw.extend_from_slice(&[6, ip.prefix_len()]);
            raw.extend_from_slice(&a.octets());
        }
    }
}

/// Reads what [`write_ip`] writes, canonical only (shared with session parts).
pub(crate) fn parse_ip(c: &mut Cursor<'_>) -> Result<IpBinding, Reason> {
    let [family, prefix] = c.array()?;
    let addr = match family {
        4 => IpAddr::V4(Ipv4Addr::from(c.array::<4>()?)),
        6 => {
            let v6 = Ipv6Addr::from(c.array::<16>()?);
            // Mapped addresses are always written as IPv4.
            if v6.to_ipv4_mapped().is_some() {
                return Err(Reason::Malformed);
            }
            IpAddr::V6(v6)
        }
        _ => return Err(Reason::Malformed),
    };
    // Canonical: prefix in range and host bits zero.
    match IpBinding::new(addr, prefix) {
        Ok(b) if b.addr() == addr => Ok(b),
        _ => Err(Reason::Malformed),
    }
}
