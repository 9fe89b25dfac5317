//! The claims a token carries, as owned values for minting and inspection,
//! with the hard limits every field obeys.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::path::{PathError, canonicalize_path};

/// Key identifier: selects the verification key in the [`crate::KeyRing`].
pub type KeyId = u32;

/// Length of a token id in bytes (64 bits, random, chosen by the minter).
pub const TOKEN_ID_LEN: usize = 8;

/// Random per-token identifier, used for single-link revocation and logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TokenId(pub [u8; TOKEN_ID_LEN]);

impl TokenId {
    /// The id as a `u64` (big-endian), the form revocation sets index by.
    pub const fn as_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// From the `u64` form.
    pub const fn from_u64(v: u64) -> TokenId {
        TokenId(v.to_be_bytes())
    }

    /// Parses the 16-character lower-case hex form.
    pub fn from_hex(s: &str) -> Option<TokenId> {
        if s.len() != 2 * TOKEN_ID_LEN {
            return None;
        }
        u64::from_str_radix(s, 16).ok().filter(|_| s.bytes().all(|b| b.is_ascii_hexdigit())).map(TokenId::from_u64)
    }
}

/// Token ids are not secret; they print as 16 lower-case hex digits.
impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.as_u64())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// Longest scope path, in bytes.
pub const MAX_SCOPE_LEN: usize = 255;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 64;
/// Longest share channel, in bytes.
pub const MAX_CHANNEL_LEN: usize = 32;
/// Most countries in one allow- or deny-list.
pub const MAX_COUNTRIES: usize = 32;
/// Longest lifetime a token may carry (31 days). Policies are far stricter.
pub const MAX_TTL_SECS: u64 = 31 * 24 * 3600;

/// Longest playback a session policy may allow from its start (7 days):
/// the hard maximum of a session, whatever the idle timeout.
pub const MAX_SESSION_SECS: u32 = 7 * 24 * 3600;

/// A link's session policy: signed into the link by the control plane, so an
/// edge never extends playback longer, or binds it less, than the minter
/// allowed (`docs/sessions.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionPolicy {
    /// Idle timeout: a session credential an edge issues lives this long
    /// unless the player's fetches renew it (1..=`max_secs`).
    pub idle_secs: u32,
    /// Hard maximum: no session outlives its start by more than this,
    /// renewals included (`idle_secs..=`[`MAX_SESSION_SECS`]).
    pub max_secs: u32,
    /// Bind each session to the client's IPv4 network of this prefix length
    /// (0 = not bound, else 1..=32).
    pub bind_v4: u8,
    /// Bind each session to the client's IPv6 network of this prefix length
    /// (0 = not bound, else 1..=128).
    pub bind_v6: u8,
}

impl SessionPolicy {
    /// Checks the limits above.
    pub fn validate(&self) -> Result<(), ClaimsError> {
        if self.idle_secs == 0 || self.idle_secs > self.max_secs || self.max_secs > MAX_SESSION_SECS {
            return Err(ClaimsError::SessionLifetime);
        }
        if self.bind_v4 > 32 || self.bind_v6 > 128 {
            return Err(ClaimsError::IpPrefix);
        }
        Ok(())
    }

    /// The binding prefix length this policy asks for a client of this
    /// address family (0 = none).
    pub fn bind_for(&self, client: IpAddr) -> u8 {
        if unmap(client).is_ipv4() { self.bind_v4 } else { self.bind_v6 }
    }
}

/// What paths a token admits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Exactly this canonical path.
    Exact(String),
    /// Every path under this canonical prefix, which ends in `/`, so it
    /// matches on a segment boundary only: `/vod/ab/` never admits `/vod/abc/x`.
    Prefix(String),
}

impl Scope {
    /// The scope's path.
    pub fn path(&self) -> &str {
        match self {
            Scope::Exact(p) | Scope::Prefix(p) => p,
        }
    }

    /// Whether this scope admits the canonical request path.
    pub fn admits(&self, canonical_path: &str) -> bool {
        scope_admits(self.is_prefix(), self.path(), canonical_path)
    }

    /// Whether this is a prefix scope.
    pub fn is_prefix(&self) -> bool {
        matches!(self, Scope::Prefix(_))
    }

    /// Builds a scope from a path as a caller wrote it: canonicalised, and a
    /// prefix when it ends in `/`.
    pub fn parse(path: &str) -> Result<Scope, ClaimsError> {
        let canon = canonicalize_path(path.as_bytes()).map_err(ClaimsError::Path)?.into_owned();
        Ok(if canon.ends_with('/') { Scope::Prefix(canon) } else { Scope::Exact(canon) })
    }
}

pub(crate) fn scope_admits(prefix: bool, scope: &str, canonical_path: &str) -> bool {
    if prefix { canonical_path.starts_with(scope) } else { canonical_path == scope }
}

/// A two-letter ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// From two ASCII letters, either case.
    pub fn new(code: [u8; 2]) -> Option<Country> {
        code.iter()
            .all(u8::is_ascii_alphabetic)
            .then(|| Country([code[0].to_ascii_uppercase(), code[1].to_ascii_uppercase()]))
    }

    /// From a two-letter string, either case.
    pub fn parse(s: &str) -> Option<Country> {
        match s.as_bytes() {
            [a, b] => Country::new([*a, *b]),
            _ => None,
        }
    }

    /// The client's country as a geo source reports it (a trusted header, a
    /// database): two ASCII letters in either case (`de` is `DE`). Anything else is
    /// unknown (`None`): empty, one or three letters, digits such as Cloudflare's
    /// Tor marker `T1`, and the codes ISO 3166-1 leaves to user assignment (`AA`,
    /// `QM`–`QZ`, `XA`–`XZ`, `ZZ`), which geo sources use for "unknown" (`XX`). So
    /// an unknown client always meets the verifier's unknown-country policy, never
    /// a list (`docs/token-format.md` § 4).
    pub fn from_client(value: &[u8]) -> Option<Country> {
        let c = match value {
            [a, b] => Country::new([*a, *b])?,
            _ => return None,
        };
        let user_assigned = matches!(c.0, [b'A', b'A'] | [b'Q', b'M'..=b'Z'] | [b'X', _] | [b'Z', b'Z']);
        (!user_assigned).then_some(c)
    }

    /// The two upper-case bytes.
    pub fn bytes(self) -> [u8; 2] {
        self.0
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        // Always two ASCII letters.
        core::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// Country binding: an allow-list or a deny-list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CountryRule {
    /// Only these countries.
    Allow(Vec<Country>),
    /// Every country but these.
    Deny(Vec<Country>),
}

impl CountryRule {
    /// The listed countries.
    pub fn countries(&self) -> &[Country] {
        match self {
            CountryRule::Allow(c) | CountryRule::Deny(c) => c,
        }
    }

    fn normalised(&self) -> CountryRule {
        let mut list = self.countries().to_vec();
        list.sort_unstable();
        list.dedup();
        match self {
            CountryRule::Allow(_) => CountryRule::Allow(list),
            CountryRule::Deny(_) => CountryRule::Deny(list),
        }
    }
}

/// IP binding: a network the client address must fall in. Host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpBinding {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpBinding {
    /// A network; host bits beyond `prefix_len` are cleared. `prefix_len` must
    /// be 1..=32 for IPv4 and 1..=128 for IPv6. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are turned into IPv4 first.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<IpBinding, ClaimsError> {
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // A mapped prefix counts the 96 mapping bits.
                Some(v4) if prefix_len >= 96 => (IpAddr::V4(v4), prefix_len - 96),
                Some(_) => return Err(ClaimsError::IpPrefix),
                None => (addr, prefix_len),
            },
            v4 => (v4, prefix_len),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len == 0 || prefix_len > max {
            return Err(ClaimsError::IpPrefix);
        }
        Ok(IpBinding { addr: mask(addr, prefix_len), prefix_len })
    }

    /// The binding a minter uses for one client address: the address itself
    /// for IPv4 (`v4_prefix` = 32) and, since IPv6 clients rotate privacy
    /// addresses, usually its /64 (`v6_prefix` = 64).
    pub fn for_client(addr: IpAddr, v4_prefix: u8, v6_prefix: u8) -> Result<IpBinding, ClaimsError> {
        match unmap(addr) {
            a @ IpAddr::V4(_) => IpBinding::new(a, v4_prefix),
            a @ IpAddr::V6(_) => IpBinding::new(a, v6_prefix),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether the client address falls in this network. IPv4-mapped IPv6
    /// client addresses match IPv4 bindings.
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = unmap(client);
        client.is_ipv4() == self.addr.is_ipv4() && mask(client, self.prefix_len) == self.addr
    }
}

impl fmt::Display for IpBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

pub(crate) fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Everything a token says. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claims {
    /// Which key signs (and verifies) the token.
    pub key_id: KeyId,
    /// Random id for single-link revocation.
    pub token_id: TokenId,
    /// When the token was minted.
    pub issued_at: u64,
    /// Not valid before this time; `None` means from `issued_at`.
    pub not_before: Option<u64>,
    /// Not valid from this time on.
    pub expires_at: u64,
    /// Which paths it admits.
    pub scope: Scope,
    /// Client network binding.
    pub ip: Option<IpBinding>,
    /// Country allow- or deny-list.
    pub countries: Option<CountryRule>,
    /// Opaque viewer id: 1..=64 bytes of visible ASCII (0x21..=0x7E).
    pub subject: Option<String>,
    /// Share channel such as `email` or `embed:partner-x`: 1..=32 bytes of `[a-z0-9._:-]`.
    pub channel: Option<String>,
}

/// Why claims cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimsError {
    /// The scope path is not canonical (see [`crate::canonicalize_path`]).
    Path(PathError),
    /// A prefix scope must end in `/`, an exact scope must not.
    ScopeShape,
    /// The scope path is longer than [`MAX_SCOPE_LEN`].
    ScopeTooLong,
    /// `expires_at` must be after `issued_at`, at most [`MAX_TTL_SECS`] later.
    Lifetime,
    /// `not_before` must be at or after `issued_at` and before `expires_at`.
    NotBefore,
    /// The IP prefix length is out of range.
    IpPrefix,
    /// A country list must hold 1..=[`MAX_COUNTRIES`] countries.
    Countries,
    /// The subject is empty, too long, or not visible ASCII.
    Subject,
    /// The channel is empty, too long, or has characters outside `[a-z0-9._:-]`.
    Channel,
    /// A session policy needs `1 <= idle_secs <= max_secs <= MAX_SESSION_SECS`.
    SessionLifetime,
    /// A session credential may be issued only from a link that carries a session policy.
    NoSessionPolicy,
    /// A session's times must satisfy `started_at <= issued_at`, `1 <= ttl <= max_secs`,
    /// with `started_at` inside the link's validity window.
    SessionTimes,
    /// The ring holds no session secret for the link's key.
    NoSessionSecret,
    /// The signing key is not in the key ring.
    UnknownKey,
    /// The ring holds only the public half of this Ed25519 key: it verifies, it cannot sign.
    PublicOnly,
}

impl ClaimsError {
    /// A message a caller can act on.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClaimsError::Path(_) => "scope path is not a valid canonical path",
            ClaimsError::ScopeShape => "prefix scope must end with '/', exact scope must not",
            ClaimsError::ScopeTooLong => "scope path longer than 255 bytes",
            ClaimsError::Lifetime => "expiry must be after issue time and within 31 days of it",
            ClaimsError::NotBefore => "not-before must be within [issued_at, expires_at)",
            ClaimsError::IpPrefix => "IP prefix length out of range (1..=32 for IPv4, 1..=128 for IPv6)",
            ClaimsError::Countries => "country list must hold 1 to 32 countries",
            ClaimsError::Subject => "subject must be 1 to 64 visible ASCII characters",
            ClaimsError::Channel => "channel must be 1 to 32 characters of [a-z0-9._:-]",
            ClaimsError::SessionLifetime => "session policy needs 1 <= idle_secs <= max_secs <= 604800",
            ClaimsError::NoSessionPolicy => "the link carries no session policy",
            ClaimsError::SessionTimes => {
                "session times out of range (started_at within the link, issued_at >= started_at, 1 <= ttl <= max)"
            }
            ClaimsError::NoSessionSecret => "the key ring holds no session secret for the link's key",
            ClaimsError::UnknownKey => "signing key id is not in the key ring",
            ClaimsError::PublicOnly => "the key ring holds only the public key of this Ed25519 key",
        }
    }
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimsError::Path(e) => write!(f, "{}: {e}", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

impl std::error::Error for ClaimsError {}

pub(crate) fn valid_subject(s: &[u8]) -> bool {
    (1..=MAX_SUBJECT_LEN).contains(&s.len()) && s.iter().all(|b| (0x21..=0x7e).contains(b))
}

pub(crate) fn valid_channel(s: &[u8]) -> bool {
    (1..=MAX_CHANNEL_LEN).contains(&s.len())
        && s.iter().all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b':' | b'-'))
}

impl Claims {
    /// Checks every field against the format's limits and returns the claims
    /// in normal form (country list sorted and de-duplicated).
    pub fn validated(&self) -> Result<Claims, ClaimsError> {
        let path = self.scope.path();
        if canonicalize_path(path.as_bytes()).map_err(ClaimsError::Path)? != path {
            return Err(ClaimsError::Path(PathError::ForbiddenEscape));
        }
        if path.len() > MAX_SCOPE_LEN {
            return Err(ClaimsError::ScopeTooLong);
        }
        if self.scope.is_prefix() != path.ends_with('/') {
            return Err(ClaimsError::ScopeShape);
        }
        let ttl = self.expires_at.checked_sub(self.issued_at).ok_or(ClaimsError::Lifetime)?;
        if ttl == 0 || ttl > MAX_TTL_SECS {
            return Err(ClaimsError::Lifetime);
        }
        if let Some(nbf) = self.not_before
            && (nbf < self.issued_at || nbf >= self.expires_at)
        {
            return Err(ClaimsError::NotBefore);
        }
        if let Some(ip) = self.ip {
            // Re-run the constructor's checks: fields are public.
            if IpBinding::new(ip.addr, ip.prefix_len)? != ip {
                return Err(ClaimsError::IpPrefix);
            }
        }
        let countries = match &self.countries {
            Some(rule) => {
                let rule = rule.normalised();
                if rule.countries().is_empty() || rule.countries().len() > MAX_COUNTRIES {
                    return Err(ClaimsError::Countries);
                }
                Some(rule)
            }
            None => None,
        };
        if self.subject.as_ref().is_some_and(|s| !valid_subject(s.as_bytes())) {
            return Err(ClaimsError::Subject);
        }
        if self.channel.as_ref().is_some_and(|c| !valid_channel(c.as_bytes())) {
            return Err(ClaimsError::Channel);
        }
        Ok(Claims { countries, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_on_segment_boundary() {
        let s = Scope::parse("/vod/ab/").unwrap();
        assert!(s.admits("/vod/ab/x.ts"));
        assert!(s.admits("/vod/ab/720p/x.ts"));
        assert!(!s.admits("/vod/abc/x.ts"));
        assert!(!s.admits("/vod/ab"));
        let e = Scope::parse("/vod/ab/master.m3u8").unwrap();
        assert!(e.admits("/vod/ab/master.m3u8"));
        assert!(!e.admits("/vod/ab/master.m3u8x"));
        assert!(!e.admits("/vod/ab/master.m3u"));
        assert!(Scope::parse("/vod/../x").is_err());
        assert_eq!(Scope::parse("/vod/%61/").unwrap(), Scope::Prefix("/vod/a/".into()));
    }

    #[test]
    fn ip_bindings() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let b = IpBinding::for_client(v4, 32, 64).unwrap();
        assert!(b.contains(v4));
        assert!(b.contains("::ffff:203.0.113.7".parse().unwrap()));
        assert!(!b.contains("203.0.113.8".parse().unwrap()));
        let net = IpBinding::new("203.0.113.77".parse().unwrap(), 24).unwrap();
        assert_eq!(net.to_string(), "203.0.113.0/24");
        assert!(net.contains("203.0.113.200".parse().unwrap()));
        assert!(!net.contains("203.0.114.1".parse().unwrap()));

        let v6: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let b6 = IpBinding::for_client(v6, 32, 64).unwrap();
        assert_eq!(b6.to_string(), "2001:db8:1:2::/64");
        assert!(b6.contains("2001:db8:1:2::99".parse().unwrap()), "privacy address rotation");
        assert!(!b6.contains("2001:db8:1:3::1".parse().unwrap()));
        assert!(!b6.contains(v4));
        let exact6 = IpBinding::for_client(v6, 32, 128).unwrap();
        assert!(!exact6.contains("2001:db8:1:2::99".parse().unwrap()));

        let mapped = IpBinding::new("::ffff:10.1.2.3".parse().unwrap(), 120).unwrap();
        assert_eq!(mapped.to_string(), "10.1.2.0/24");
        assert_eq!(IpBinding::new(v4, 0), Err(ClaimsError::IpPrefix));
        assert_eq!(IpBinding::new(v4, 33), Err(ClaimsError::IpPrefix));
        assert_eq!(IpBinding::new(v6, 129), Err(ClaimsError::IpPrefix));
    }

    #[test]
    fn token_id_forms() {
        let id = TokenId([1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(id.to_string(), "01020304050607ff");
        assert_eq!(TokenId::from_hex("01020304050607ff"), Some(id));
        assert_eq!(TokenId::from_hex("+1020304050607ff"), None);
        assert_eq!(TokenId::from_hex("0102"), None);
    }

    #[test]
    fn countries_parse() {
        assert_eq!(Country::parse("us").unwrap().as_str(), "US");
        assert!(Country::parse("USA").is_none());
        assert!(Country::parse("U1").is_none());
    }

    #[test]
    fn client_countries_unknown_unless_two_letters_of_a_real_code() {
        let c = |v: &str| Country::from_client(v.as_bytes()).map(|c| c.to_string());
        assert_eq!(c("de").as_deref(), Some("DE"));
        assert_eq!(c("Fr").as_deref(), Some("FR"));
        assert_eq!(c("QL").as_deref(), Some("QL"));
        for unknown in ["", "D", "DEU", "T1", "A1", "XX", "xk", "ZZ", "AA", "QM", "QZ", " D"] {
            assert_eq!(c(unknown), None, "{unknown:?}");
        }
    }
}
