//! # stile-foreign
//!
//! The signed-link formats of other vendors, so that links already in the
//! wild keep playing while an operator moves to Stile: Akamai EdgeAuth
//! (Token Auth 2.0), Google Cloud CDN signed URLs and cookies, Google Media
//! CDN signed requests and dual tokens, Bunny token authentication v2, and
//! nginx `secure_link` / `secure_link_secret`. Each module says which of the
//! vendor's published documents it implements and where the vendor's own
//! libraries disagree with those documents.
//!
//! Like `stile-token`, this crate is pure: no I/O, no clock (the time is an
//! argument), no async, no globals, no `unsafe`, bounded input sizes, and no
//! panics on any input. MACs are compared in constant time. Denials use
//! Stile's stable [`Reason`] codes, and request paths go through Stile's
//! canonicaliser ([`stile_token::canonicalize_path`]), so a foreign link can
//! never admit a path a Stile token could not be scoped to.
//!
//! Every format has the same two steps:
//! 1. [`Config::locate`] finds the format's token in a request target and
//!    its `Cookie` headers and returns a [`Found`]: the parsed token, the
//!    canonical path with the token removed, and the upstream target the
//!    origin gets (no trace of the token). Ambiguity — the token given twice,
//!    an unparseable path — is `malformed`.
//! 2. [`Config::verify`] checks the signature against the [`Keys`] and the
//!    [`Request`] (host, client address, country, time) and returns what the
//!    edge needs next: expiry, the vendor's token or session id, the scope
//!    for cookie mode and playlist rewriting, and how to carry the token on.
//!
//! ```
//! use stile_foreign::{Config, Keys, Key, KeyEncoding, Request, akamai};
//!
//! let cfg = Config::Akamai(akamai::Config::default());
//! let keys = Keys::new(vec![Key::parse_secret("primary", "52a152a152a152a152a152a152a1", KeyEncoding::Hex).unwrap()]).unwrap();
//! let token = akamai::sign(&akamai::Config::default(), keys.iter().next().unwrap(), &akamai::Claims {
//!     start: None, expires: 1_700_000_600, acl: Some("/vod/abc/*"), ..Default::default()
//! }).unwrap();
//! let target = format!("/vod/abc/seg1.ts?__token__={token}");
//! let found = cfg.locate(target.as_bytes(), &[]).unwrap().unwrap();
//! assert_eq!(found.upstream, "/vod/abc/seg1.ts");
//! let req = Request::new("https", "media.example.com", 1_700_000_000);
//! let ok = cfg.verify(&found, &keys, &req).unwrap();
//! assert_eq!(ok.expires, Some(1_700_000_600));
//! ```

pub mod akamai;
pub mod bunny;
pub mod google;
mod keys;
pub mod nginx;
mod util;

use core::fmt;
use std::net::IpAddr;

pub use keys::{Key, KeyEncoding, KeyError, Keys, MAX_KEY_NAME_LEN, MAX_KEYS, MAX_SECRET_LEN};
pub use stile_token::{Country, Reason, UnknownCountry};
pub use util::{Hash, MAX_TARGET_LEN, hmac};

/// The supported foreign formats. The strings are the `--format` values of
/// `stile explain` and the `format` label of metrics: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Akamai EdgeAuth / Token Auth 2.0 (`__token__`, `hdnts`).
    Akamai,
    /// Google Cloud CDN signed URLs, URL prefixes and cookies.
    CloudCdn,
    /// Google Media CDN signed requests (Ed25519) and dual tokens.
    MediaCdn,
    /// Bunny token authentication v2 (`HS256-`).
    Bunny,
    /// nginx `secure_link` and `secure_link_secret`.
    NginxSecureLink,
}

impl Format {
    /// Every format, for metric label pre-registration.
    pub const ALL: [Format; 5] =
        [Format::Akamai, Format::CloudCdn, Format::MediaCdn, Format::Bunny, Format::NginxSecureLink];

    /// The stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Akamai => "akamai",
            Format::CloudCdn => "cloud-cdn",
            Format::MediaCdn => "media-cdn",
            Format::Bunny => "bunny",
            Format::NginxSecureLink => "nginx-secure-link",
        }
    }

    /// Parses a name produced by [`Format::as_str`].
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the request the token was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A path segment (Akamai token in URI, Bunny `/bcdn_token=…/`,
    /// Media CDN `/edge-cache-token=…/`, nginx `secure_link_secret`).
    Path,
    /// Query parameters.
    Query,
    /// A cookie.
    Cookie,
}

impl Transport {
    /// The metric and log label (the same strings as Stile's own transports).
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Path => "path",
            Transport::Query => "query",
            Transport::Cookie => "cookie",
        }
    }
}

/// What the verifier knows about the request, beyond its target.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `http` or `https`, as the client used it (Google signs whole URLs).
    pub scheme: &'a str,
    /// The `Host` the client sent, without a default port.
    pub host: &'a str,
    /// The client address, if known.
    pub client_ip: Option<IpAddr>,
    /// The client's country, if known.
    pub country: Option<Country>,
    /// The verifier's current time, Unix seconds.
    pub now: u64,
    /// Clock-skew allowance applied to both ends of the validity window.
    pub leeway_secs: u32,
    /// What country-bound links get when the country is unknown.
    pub unknown_country: UnknownCountry,
    /// Request headers, for Media CDN tokens bound to header values.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> Request<'a> {
    /// A request with no client address, country or headers, and no leeway.
    pub const fn new(scheme: &'a str, host: &'a str, now: u64) -> Request<'a> {
        Request {
            scheme,
            host,
            client_ip: None,
            country: None,
            now,
            leeway_secs: 0,
            unknown_country: UnknownCountry::Deny,
            headers: &[],
        }
    }

    fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// `expired` / `not_yet_valid` for a validity window. `inclusive_end`:
    /// the vendor still admits at exactly the expiry second.
    fn check_window(&self, not_before: Option<u64>, expires: Option<u64>, inclusive_end: bool) -> Result<(), Reason> {
        let leeway = u64::from(self.leeway_secs);
        if let Some(exp) = expires {
            let end = exp.saturating_add(leeway);
            if self.now > end || (!inclusive_end && self.now == end) {
                return Err(Reason::Expired);
            }
        }
        if let Some(nbf) = not_before
            && self.now.saturating_add(leeway) < nbf
        {
            return Err(Reason::NotYetValid);
        }
        Ok(())
    }

    /// `geo` unless the country passes an allow- and a deny-list (each a
    /// comma-separated list of ISO codes, as Bunny writes them).
    fn check_countries(&self, allow: Option<&[u8]>, deny: Option<&[u8]>) -> Result<(), Reason> {
        if allow.is_none() && deny.is_none() {
            return Ok(());
        }
        let Some(country) = self.country else {
            return if self.unknown_country == UnknownCountry::Allow { Ok(()) } else { Err(Reason::Geo) };
        };
        let listed = |list: &[u8]| {
            list.split(|&b| b == b',').any(|c| Country::new_slice(c.trim_ascii()).is_some_and(|c| c == country))
        };
        if allow.is_some_and(|a| !listed(a)) || deny.is_some_and(listed) {
            return Err(Reason::Geo);
        }
        Ok(())
    }
}

trait CountryExt: Sized {
    fn new_slice(b: &[u8]) -> Option<Self>;
}

impl CountryExt for Country {
    fn new_slice(b: &[u8]) -> Option<Country> {
        <[u8; 2]>::try_from(b).ok().and_then(Country::new)
    }
}

/// What a verified link admits, for cookie mode and the playlist rewriter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Exactly this canonical path.
    Exact(&'a str),
    /// Every path starting with this string (Bunny `token_path`, the
    /// directory before a Media CDN path component).
    PathPrefix(&'a str),
    /// Every URL starting with this `scheme://host/path` prefix (Google `URLPrefix`).
    UrlPrefix(&'a str),
    /// Glob patterns (`*`, `?`), any of which admits a path: Akamai `acl`
    /// (split on the ACL delimiter) or Media CDN `PathGlobs` (on `,` and `!`).
    Globs {
        /// The patterns as the token spells them (decoded if it escaped them).
        list: &'a str,
        /// The bytes that separate patterns.
        separators: &'a [u8],
    },
}

impl Scope<'_> {
    /// Whether the scope admits a request (canonical path).
    pub fn admits(&self, scheme: &str, host: &str, canonical_path: &str) -> bool {
        match *self {
            Scope::Exact(p) => p == canonical_path,
            Scope::PathPrefix(p) => canonical_path.starts_with(p),
            Scope::UrlPrefix(u) => google::url_prefix_admits(u, scheme, host, canonical_path, None),
            Scope::Globs { list, separators } => list
                .as_bytes()
                .split(|b| separators.contains(b))
                .any(|g| !g.is_empty() && util::glob(g, canonical_path.as_bytes())),
        }
    }
}

/// How a link can be carried to the other requests its scope admits
/// (segments, variant playlists), in the form the vendor accepts there.
/// The strings are credentials: never log them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Carry<'a> {
    /// Append these query pairs (`a=b&c=d`, as they appeared) to each URL.
    Query(&'a str),
    /// Put this segment (`name=value`, no slashes) into each path, after the scope prefix.
    PathSegment(&'a str),
    /// Set this cookie.
    Cookie {
        /// Cookie name.
        name: &'a str,
        /// Cookie value.
        value: &'a str,
    },
}

impl fmt::Debug for Carry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Carry::Query(_) => f.write_str("Carry::Query(<redacted>)"),
            Carry::PathSegment(_) => f.write_str("Carry::PathSegment(<redacted>)"),
            Carry::Cookie { name, .. } => write!(f, "Carry::Cookie({name:?}, <redacted>)"),
        }
    }
}

/// A link that passed every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The format.
    pub format: Format,
    /// The name of the key that verified it.
    pub key_name: &'a str,
    /// Not valid before (Akamai `st`, Media CDN `Starts`).
    pub not_before: Option<u64>,
    /// Expiry, Unix seconds; `None` for links that never expire
    /// (`secure_link_secret`, `secure_link` without an expiry).
    pub expires: Option<u64>,
    /// The vendor's per-link id, for revocation: Akamai `id`, Media CDN `SessionID`.
    pub token_id: Option<&'a str>,
    /// Opaque data the link carries: Akamai `data`, Media CDN `Data`.
    pub data: Option<&'a str>,
    /// What the link admits.
    pub scope: Scope<'a>,
    /// Whether the link is bound to the client's address.
    pub ip_bound: bool,
    /// How to carry the link onward; `None` when its scope is one exact
    /// path or the format cannot be carried.
    pub carry: Option<Carry<'a>>,
}

/// A token found in a request, parsed but **not verified**.
#[derive(Clone)]
pub struct Found<'a> {
    /// The format.
    pub format: Format,
    /// Where it was.
    pub transport: Transport,
    /// The canonical request path with the token removed.
    pub path: String,
    /// The target the origin gets: the canonical path and the query without
    /// the token's parameters (other parameters byte for byte).
    pub upstream: String,
    /// The raw path as the client sent it, token removed (what vendors sign).
    pub(crate) raw_path: Vec<u8>,
    /// The raw query as the client sent it, if any.
    pub(crate) raw_query: Option<&'a [u8]>,
    pub(crate) detail: Detail<'a>,
}

#[derive(Clone)]
pub(crate) enum Detail<'a> {
    Akamai(akamai::Parsed<'a>),
    Google(google::Parsed<'a>),
    Bunny(bunny::Parsed<'a>),
    Nginx(nginx::Parsed<'a>),
}

impl fmt::Debug for Found<'_> {
    /// The decoded fields (none is secret) but never a signature or MAC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("format", &self.format)
            .field("transport", &self.transport)
            .field("path", &self.path)
            .field("fields", &self.fields())
            .finish_non_exhaustive()
    }
}

impl Found<'_> {
    /// The token's decoded fields as `(name, value)`, in the vendor's names,
    /// for `stile explain`. Signatures and MACs are shown truncated.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match &self.detail {
            Detail::Akamai(p) => p.fields(),
            Detail::Google(p) => p.fields(),
            Detail::Bunny(p) => p.fields(),
            Detail::Nginx(p) => p.fields(),
        }
    }
}

/// Why a format configuration is unusable (checked before an edge binds).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A parameter, cookie or segment name that is empty or not a token character string.
    #[error("{0}: name {1:?} must be 1..=64 bytes of [A-Za-z0-9_.-]")]
    Name(&'static str, String),
    /// A delimiter that could also appear inside a field.
    #[error("{0}: delimiter {1:?} is not allowed")]
    Delimiter(&'static str, char),
    /// An nginx expression that does not parse.
    #[error("nginx secure_link expression: {0}")]
    Expression(String),
    /// Any other invalid setting.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(ConfigError::Name(what, name.into())) }
}

/// One format's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Config {
    /// Akamai EdgeAuth.
    Akamai(akamai::Config),
    /// Google Cloud CDN.
    CloudCdn(google::CloudCdnConfig),
    /// Google Media CDN.
    MediaCdn(google::MediaCdnConfig),
    /// Bunny.
    Bunny(bunny::Config),
    /// nginx secure_link.
    NginxSecureLink(nginx::Config),
}

impl Config {
    /// The vendor's defaults for a format (nginx: `secure_link $arg_md5,$arg_expires`
    /// with the expression from the nginx documentation's example).
    pub fn default_for(format: Format) -> Config {
        match format {
            Format::Akamai => Config::Akamai(akamai::Config::default()),
            Format::CloudCdn => Config::CloudCdn(google::CloudCdnConfig::default()),
            Format::MediaCdn => Config::MediaCdn(google::MediaCdnConfig::default()),
            Format::Bunny => Config::Bunny(bunny::Config::default()),
            Format::NginxSecureLink => Config::NginxSecureLink(nginx::Config::default()),
        }
    }

    /// The format.
    pub fn format(&self) -> Format {
        match self {
            Config::Akamai(_) => Format::Akamai,
            Config::CloudCdn(_) => Format::CloudCdn,
            Config::MediaCdn(_) => Format::MediaCdn,
            Config::Bunny(_) => Format::Bunny,
            Config::NginxSecureLink(_) => Format::NginxSecureLink,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Config::Akamai(c) => c.validate(),
            Config::CloudCdn(c) => c.validate(),
            Config::MediaCdn(c) => c.validate(),
            Config::Bunny(c) => c.validate(),
            Config::NginxSecureLink(c) => c.validate(),
        }
    }

    /// Finds this format's token in a request target (`/path?query`, at most
    /// [`MAX_TARGET_LEN`] bytes) and its `Cookie` header values. `Ok(None)`:
    /// no token of this format; `malformed`: a token that cannot be parsed,
    /// given twice, or a path that is ambiguous once the token is removed.
    pub fn locate<'a>(&self, target: &'a [u8], cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        if target.len() > MAX_TARGET_LEN || target.first() != Some(&b'/') {
            return Err(Reason::Malformed);
        }
        match self {
            Config::Akamai(c) => c.locate(target, cookies),
            Config::CloudCdn(c) => c.locate(target, cookies),
            Config::MediaCdn(c) => c.locate(target, cookies),
            Config::Bunny(c) => c.locate(target, cookies),
            Config::NginxSecureLink(c) => c.locate(target, cookies),
        }
    }

    /// Verifies a located token: key, signature (constant time), validity
    /// window, scope, client address, country — stopping at the first failure.
    pub fn verify<'a>(&self, found: &'a Found<'_>, keys: &'a Keys, req: &Request<'_>) -> Result<Verified<'a>, Reason> {
        if keys.is_empty() {
            return Err(Reason::UnknownKey);
        }
        match (self, &found.detail) {
            (Config::Akamai(c), Detail::Akamai(p)) => c.verify(found, p, keys, req),
            (Config::CloudCdn(c), Detail::Google(p)) => c.verify(found, p, keys, req),
            (Config::MediaCdn(c), Detail::Google(p)) => c.verify(found, p, keys, req),
            (Config::Bunny(c), Detail::Bunny(p)) => c.verify(found, p, keys, req),
            (Config::NginxSecureLink(c), Detail::Nginx(p)) => c.verify(found, p, keys, req),
            _ => Err(Reason::Malformed),
        }
    }
}

/// A token segment: its value, the raw path without it, and where it started.
pub(crate) type Segment<'a> = (&'a [u8], Vec<u8>, usize);

/// Locates a token carried as a path segment starting with `prefix`
/// (`name=`): returns the segment's value and the raw path without the
/// segment. Two such segments are `malformed`, as is a segment with nothing after it.
pub(crate) fn path_segment<'a>(path: &'a [u8], prefix: &[u8]) -> Result<Option<Segment<'a>>, Reason> {
    let mut found = None;
    let mut start = 1usize;
    while start <= path.len() {
        let end = path[start..].iter().position(|&b| b == b'/').map_or(path.len(), |i| start + i);
        if path[start..end].starts_with(prefix) {
            if found.is_some() {
                return Err(Reason::Malformed);
            }
            found = Some((start, end));
        }
        start = end + 1;
    }
    let Some((start, end)) = found else { return Ok(None) };
    if end >= path.len() {
        return Err(Reason::Malformed);
    }
    let mut rest = Vec::with_capacity(path.len());
    rest.extend_from_slice(&path[..start - 1]);
    rest.extend_from_slice(&path[end..]);
    Ok(Some((&path[start + prefix.len()..end], rest, start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.as_str()), Some(f));
        }
        assert_eq!(Format::from_name("stile"), None);
    }

    #[test]
    fn windows_and_countries() {
        let mut r = Request::new("https", "h", 100);
        assert_eq!(r.check_window(None, Some(100), false), Err(Reason::Expired));
        assert_eq!(r.check_window(None, Some(100), true), Ok(()));
        assert_eq!(r.check_window(None, Some(99), true), Err(Reason::Expired));
        assert_eq!(r.check_window(Some(101), Some(200), false), Err(Reason::NotYetValid));
        r.leeway_secs = 5;
        assert_eq!(r.check_window(Some(105), Some(96), false), Ok(()));
        assert_eq!(r.check_countries(Some(b"CA,US"), None), Err(Reason::Geo), "unknown country fails closed");
        r.country = Country::parse("us");
        assert_eq!(r.check_countries(Some(b"CA,US"), None), Ok(()));
        assert_eq!(r.check_countries(None, Some(b"RU,US")), Err(Reason::Geo));
        assert_eq!(r.check_countries(Some(b"CA"), None), Err(Reason::Geo));
    }

    #[test]
    fn path_segments() {
        let (v, rest, _) = path_segment(b"/a/tok=X/b/c.ts", b"tok=").unwrap().unwrap();
        assert_eq!((v, rest.as_slice()), (&b"X"[..], &b"/a/b/c.ts"[..]));
        assert_eq!(path_segment(b"/tok=X", b"tok=").unwrap_err(), Reason::Malformed);
        assert_eq!(path_segment(b"/tok=X/tok=Y/a", b"tok=").unwrap_err(), Reason::Malformed);
        assert!(path_segment(b"/a/b", b"tok=").unwrap().is_none());
    }
}
