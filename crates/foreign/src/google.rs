//! Google Cloud CDN and Media CDN.
//!
//! Implemented from Google's published documentation:
//! - Cloud CDN "Use signed URLs" (<https://cloud.google.com/cdn/docs/using-signed-urls>)
//!   and "Use signed cookies" (<https://cloud.google.com/cdn/docs/using-signed-cookies>):
//!   `Expires`, `KeyName`, `Signature` appended to the URL, the signature an
//!   HMAC-SHA1 of the URL up to `&Signature=` under a 16-byte key written in
//!   base64url; `URLPrefix=<base64url prefix>&Expires=…&KeyName=…&Signature=…`
//!   signing only the policy; the `Cloud-CDN-Cookie` cookie
//!   `URLPrefix=…:Expires=…:KeyName=…:Signature=…`;
//! - Media CDN "Generate signatures" (<https://cloud.google.com/media-cdn/docs/generate-signatures>):
//!   the same query and cookie forms signed with Ed25519, the cookie called
//!   `Edge-Cache-Cookie`, and the path component
//!   `/…/edge-cache-token=Expires=…&KeyName=…&Signature=…/rest` that signs
//!   `scheme://host/…/edge-cache-token=Expires=…&KeyName=…` and admits
//!   everything under the directory before it;
//! - Media CDN "Generate tokens" and "Use dual-token authentication"
//!   (<https://cloud.google.com/media-cdn/docs/generate-tokens>,
//!   <https://cloud.google.com/media-cdn/docs/use-dual-token-authentication>):
//!   `~`-separated fields `PathGlobs` / `URLPrefix` / `FullPath`, `Starts`,
//!   `Expires`, `SessionID`, `Data`, `Headers`, `IPRanges`, then `Signature`
//!   (Ed25519, base64url) or `hmac` (HMAC-SHA1 or -SHA256, hex). The signed
//!   value equals the token except `FullPath` (signed as `FullPath=<path>`)
//!   and `Headers` (the token lists names, the signed value `name=value` pairs).
//!
//! Where Google's own samples and documentation disagree (docs/migration.md):
//! the Cloud CDN sample writes signatures with `=` padding, the Media CDN
//! samples write them both with and without (we accept both spellings); the
//! dual-token sample's `IPRanges` example `2001:db8:4a7f:a732/64` is not an
//! IPv6 address (entries that do not parse never match).

use std::net::IpAddr;

use ed25519_dalek::Signature;
use stile_token::Reason;

use crate::util::{self, Hash};
use crate::{Carry, ConfigError, Detail, Format, Found, Keys, Request, Scope, Transport, Verified};

/// Longest token or signed cookie accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest decoded `URLPrefix`, in bytes.
pub const MAX_URL_PREFIX_LEN: usize = 2048;

/// Cloud CDN settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudCdnConfig {
    /// Signed-cookie name (`Cloud-CDN-Cookie`).
    pub cookie_name: String,
    /// Accept signed URLs and URL prefixes in the query string.
    pub query: bool,
    /// Accept signed cookies.
    pub cookie: bool,
}

impl Default for CloudCdnConfig {
    fn default() -> CloudCdnConfig {
        CloudCdnConfig { cookie_name: "Cloud-CDN-Cookie".into(), query: true, cookie: true }
    }
}

/// Media CDN settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaCdnConfig {
    /// Signed-cookie name (`Edge-Cache-Cookie`), holding a signed cookie or a dual token.
    pub cookie_name: String,
    /// Query parameter of dual tokens and name of the path component (`edge-cache-token`).
    pub token_name: String,
    /// Accept signed URLs, URL prefixes and dual tokens in the query string.
    pub query: bool,
    /// Accept signed cookies.
    pub cookie: bool,
    /// Accept path components.
    pub path: bool,
}

impl Default for MediaCdnConfig {
    fn default() -> MediaCdnConfig {
        MediaCdnConfig {
            cookie_name: "Edge-Cache-Cookie".into(),
            token_name: "edge-cache-token".into(),
            query: true,
            cookie: true,
            path: true,
        }
    }
}

/// Which of Google's forms a link has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `?…&Expires=…&KeyName=…&Signature=…` signing the whole URL.
    Url,
    /// `URLPrefix=…&Expires=…&KeyName=…&Signature=…` signing the policy.
    UrlPrefix,
    /// The signed cookie.
    Cookie,
    /// Media CDN's `/edge-cache-token=…/` path component.
    PathComponent,
}

#[derive(Clone, Debug)]
pub(crate) enum Parsed<'a> {
    Signed(Signed<'a>),
    Dual(Dual<'a>),
}

#[derive(Clone, Debug)]
pub(crate) struct Signed<'a> {
    kind: Kind,
    /// The signed bytes (after `scheme://host` for `Url` and `PathComponent`).
    signed: &'a [u8],
    url_prefix: Option<String>,
    /// For a path component: the directory before it (canonical, ends in `/`).
    dir: Option<String>,
    expires: u64,
    key_name: &'a [u8],
    sig: [u8; 64],
    sig_len: usize,
    carry: Option<Carry<'a>>,
}

#[derive(Clone, Debug)]
pub(crate) enum DualScope<'a> {
    PathGlobs(&'a str),
    UrlPrefix(String),
    FullPath,
}

#[derive(Clone, Debug)]
pub(crate) struct Dual<'a> {
    /// The token text before `~Signature=` / `~hmac=`.
    body: &'a [u8],
    scope: DualScope<'a>,
    starts: Option<u64>,
    expires: u64,
    session_id: Option<&'a str>,
    data: Option<&'a str>,
    headers: Option<&'a [u8]>,
    ip_ranges: Option<String>,
    /// `Some(hash)` for `hmac=`, `None` for an Ed25519 `Signature=`.
    hmac: Option<Hash>,
    sig: [u8; 64],
    sig_len: usize,
    carry: Carry<'a>,
}

impl CloudCdnConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        crate::check_name("cloud-cdn cookie_name", &self.cookie_name)
    }

    pub(crate) fn locate<'a>(&self, target: &'a [u8], cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        locate(Format::CloudCdn, target, cookies, self.query, self.cookie.then_some(&self.cookie_name), None)
    }

    pub(crate) fn verify<'a>(
        &self,
        found: &'a Found<'_>,
        p: &'a Parsed<'_>,
        keys: &'a Keys,
        req: &Request<'_>,
    ) -> Result<Verified<'a>, Reason> {
        match p {
            Parsed::Signed(s) => verify_signed(Format::CloudCdn, found, s, keys, req),
            Parsed::Dual(_) => Err(Reason::Malformed),
        }
    }
}

impl MediaCdnConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        crate::check_name("media-cdn cookie_name", &self.cookie_name)?;
        crate::check_name("media-cdn token_name", &self.token_name)
    }

    pub(crate) fn locate<'a>(&self, target: &'a [u8], cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        let dual = MediaNames { token: &self.token_name, path: self.path };
        locate(Format::MediaCdn, target, cookies, self.query, self.cookie.then_some(&self.cookie_name), Some(dual))
    }

    pub(crate) fn verify<'a>(
        &self,
        found: &'a Found<'_>,
        p: &'a Parsed<'_>,
        keys: &'a Keys,
        req: &Request<'_>,
    ) -> Result<Verified<'a>, Reason> {
        match p {
            Parsed::Signed(s) => verify_signed(Format::MediaCdn, found, s, keys, req),
            Parsed::Dual(d) => verify_dual(found, d, keys, req),
        }
    }
}

struct MediaNames<'c> {
    token: &'c str,
    path: bool,
}

const SIGNED_NAMES: [&[u8]; 4] = [b"URLPrefix", b"Expires", b"KeyName", b"Signature"];

fn locate<'a>(
    format: Format,
    target: &'a [u8],
    cookies: &[&'a [u8]],
    query_on: bool,
    cookie: Option<&String>,
    media: Option<MediaNames<'_>>,
) -> Result<Option<Found<'a>>, Reason> {
    let (path, query) = util::split_target(target);
    let mut raw_path = path.to_vec();
    let mut transport = Transport::Query;
    let mut parsed: Option<Parsed<'a>> = None;
    let token_name = media.as_ref().map(|m| m.token.as_bytes());

    // 1. Media CDN path component.
    if let Some(m) = media.as_ref().filter(|m| m.path) {
        let mut prefix = m.token.as_bytes().to_vec();
        prefix.push(b'=');
        if let Some((value, rest, start)) = crate::path_segment(path, &prefix)? {
            let segment = util::text(&path[start..start + prefix.len() + value.len()])?;
            let dir = util::canonical(&path[..start])?;
            parsed = Some(if value.contains(&b'~') {
                Parsed::Dual(parse_dual(value, Carry::PathSegment(segment))?)
            } else {
                // Signed: everything up to "&Signature=" within the segment, after scheme://host.
                let pol = parse_policy(value, b'&', Kind::PathComponent, Some(Carry::PathSegment(segment)))?;
                let signed_end = start + prefix.len() + pol.0;
                let mut s = pol.1;
                s.signed = &path[..signed_end];
                s.dir = Some(dir);
                Parsed::Signed(s)
            });
            transport = Transport::Path;
            raw_path = rest;
        }
    }
    // 2. Query: a signed URL or URL prefix, or a dual token.
    if parsed.is_none()
        && query_on
        && let Some(q) = query
    {
        if let Some(name) = token_name
            && let Some(p) = util::single_param(query, name)?
        {
            parsed = Some(Parsed::Dual(parse_dual(p.value, Carry::Query(util::text(&q[p.start..p.end])?))?));
        } else {
            parsed = parse_signed_query(target, path.len(), q)?.map(Parsed::Signed);
        }
    }
    // 3. Cookie.
    if parsed.is_none()
        && let Some(name) = cookie
        && let Some(v) = util::find_cookie(cookies, name.as_bytes())
    {
        let carry = Carry::Cookie {
            name: util::cookie_name(cookies, name.as_bytes()).ok_or(Reason::Malformed)?,
            value: util::text(v)?,
        };
        parsed = Some(if media.is_some() && v.contains(&b'~') {
            Parsed::Dual(parse_dual(v, carry)?)
        } else {
            Parsed::Signed(parse_policy(v, b':', Kind::Cookie, Some(carry))?.1)
        });
        transport = Transport::Cookie;
    }
    let Some(parsed) = parsed else { return Ok(None) };
    // A signed cookie always names its prefix.
    if let Parsed::Signed(s) = &parsed
        && s.kind == Kind::Cookie
        && s.url_prefix.is_none()
    {
        return Err(Reason::Malformed);
    }
    let canon = util::canonical(&raw_path)?;
    let drop_signed = matches!(parsed, Parsed::Signed(ref s) if s.kind == Kind::Url || s.kind == Kind::UrlPrefix);
    let upstream = util::upstream(&canon, query, |n| {
        (drop_signed && SIGNED_NAMES.contains(&n)) || token_name.is_some_and(|t| t == n)
    });
    Ok(Some(Found {
        format,
        transport,
        path: canon,
        upstream,
        raw_path,
        raw_query: query,
        detail: Detail::Google(parsed),
    }))
}

/// A signed URL or URL prefix in the query: the last pairs must be
/// `[URLPrefix,] Expires, KeyName, Signature`, in that order, each once.
fn parse_signed_query<'a>(target: &'a [u8], path_len: usize, q: &'a [u8]) -> Result<Option<Signed<'a>>, Reason> {
    let all: Vec<util::Pair<'a>> = util::pairs(q).collect();
    let Some(sig_at) = all.iter().position(|p| p.name == b"Signature") else {
        // Without a signature the request is not signed; stray policy fields are ambiguous.
        return if all.iter().any(|p| SIGNED_NAMES.contains(&p.name)) { Err(Reason::Malformed) } else { Ok(None) };
    };
    if sig_at + 1 != all.len() || sig_at < 2 {
        return Err(Reason::Malformed);
    }
    let (exp, key, sig) = (all[sig_at - 2], all[sig_at - 1], all[sig_at]);
    if exp.name != b"Expires" || key.name != b"KeyName" {
        return Err(Reason::Malformed);
    }
    let prefix = (sig_at >= 3 && all[sig_at - 3].name == b"URLPrefix").then(|| all[sig_at - 3]);
    let first = prefix.map_or(sig_at - 2, |_| sig_at - 3);
    if all[..first].iter().any(|p| SIGNED_NAMES.contains(&p.name)) {
        return Err(Reason::Malformed);
    }
    let mut s = Signed {
        kind: if prefix.is_some() { Kind::UrlPrefix } else { Kind::Url },
        signed: &[],
        url_prefix: None,
        dir: None,
        expires: util::parse_time(exp.value)?,
        key_name: key_name(key.value)?,
        sig: [0; 64],
        sig_len: 0,
        carry: None,
    };
    s.sig_len = util::b64url_into(sig.value, &mut s.sig).ok_or(Reason::Malformed)?;
    // The query starts at path_len + 1 in the target.
    let q0 = path_len + 1;
    match prefix {
        Some(p) => {
            s.url_prefix = Some(decode_prefix(p.value)?);
            s.signed = &q[p.start..key.end];
            s.carry = Some(Carry::Query(util::text(&q[p.start..sig.end])?));
        }
        None => s.signed = &target[..q0 + key.end],
    }
    Ok(Some(s))
}

/// `[URLPrefix=…<sep>]Expires=…<sep>KeyName=…<sep>Signature=…` (cookies,
/// path components). Returns the offset where `<sep>Signature=` starts.
fn parse_policy<'a>(v: &'a [u8], sep: u8, kind: Kind, carry: Option<Carry<'a>>) -> Result<(usize, Signed<'a>), Reason> {
    if v.len() > MAX_TOKEN_LEN {
        return Err(Reason::Malformed);
    }
    let mut s = Signed {
        kind,
        signed: &[],
        url_prefix: None,
        dir: None,
        expires: 0,
        key_name: &[],
        sig: [0; 64],
        sig_len: 0,
        carry,
    };
    let mut order = 0;
    let mut pos = 0usize;
    let mut sig_start = None;
    for field in v.split(|&b| b == sep) {
        let start = pos;
        pos += field.len() + 1;
        let eq = field.iter().position(|&b| b == b'=').ok_or(Reason::Malformed)?;
        let (name, value) = (&field[..eq], &field[eq + 1..]);
        let step = SIGNED_NAMES.iter().position(|n| *n == name).ok_or(Reason::Malformed)?;
        // Strictly in order; URLPrefix optional.
        if step < order || (step > order && !(order == 0 && step == 1)) {
            return Err(Reason::Malformed);
        }
        order = step + 1;
        match step {
            0 => s.url_prefix = Some(decode_prefix(value)?),
            1 => s.expires = util::parse_time(value)?,
            2 => s.key_name = key_name(value)?,
            _ => {
                s.sig_len = util::b64url_into(value, &mut s.sig).ok_or(Reason::Malformed)?;
                sig_start = Some(start);
            }
        }
    }
    let start = sig_start.filter(|_| order == 4).ok_or(Reason::Malformed)?;
    if start == 0 {
        return Err(Reason::Malformed);
    }
    s.signed = &v[..start - 1];
    Ok((start - 1, s))
}

fn key_name(v: &[u8]) -> Result<&[u8], Reason> {
    if v.is_empty() || v.len() > crate::MAX_KEY_NAME_LEN || !v.iter().all(|b| (0x21..0x7f).contains(b)) {
        return Err(Reason::Malformed);
    }
    Ok(v)
}

fn decode_prefix(v: &[u8]) -> Result<String, Reason> {
    let bytes = util::b64url_vec(v, MAX_URL_PREFIX_LEN).ok_or(Reason::Malformed)?;
    let s = String::from_utf8(bytes).map_err(|_| Reason::Malformed)?;
    // scheme://host/…
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).ok_or(Reason::Malformed)?;
    if rest.is_empty() || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Reason::Malformed);
    }
    Ok(s)
}

/// Whether a signed `URLPrefix` admits a request. The prefix is compared
/// with `scheme://host` + the canonical path (+ `?query` when given), so a
/// prefix cannot be escaped with dot segments or encoded slashes.
pub(crate) fn url_prefix_admits(prefix: &str, scheme: &str, host: &str, path: &str, query: Option<&str>) -> bool {
    let mut url = String::with_capacity(scheme.len() + host.len() + path.len() + 4 + query.map_or(0, str::len));
    url.push_str(scheme);
    url.push_str("://");
    url.push_str(host);
    url.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    url.starts_with(prefix)
}

fn verify_signed<'a>(
    format: Format,
    found: &'a Found<'_>,
    s: &'a Signed<'_>,
    keys: &'a Keys,
    req: &Request<'_>,
) -> Result<Verified<'a>, Reason> {
    let key = keys.get(s.key_name).ok_or(Reason::UnknownKey)?;
    let origin_parts: [&[u8]; 3] = [req.scheme.as_bytes(), b"://", req.host.as_bytes()];
    let with_origin = matches!(s.kind, Kind::Url | Kind::PathComponent);
    let ok = match format {
        Format::CloudCdn => {
            let secret = key.secret_bytes().ok_or(Reason::BadSignature)?;
            let sig = &s.sig[..s.sig_len];
            if with_origin {
                let parts = [origin_parts[0], origin_parts[1], origin_parts[2], s.signed];
                util::hmac_ok(Hash::Sha1, secret, &parts, sig)
            } else {
                util::hmac_ok(Hash::Sha1, secret, &[s.signed], sig)
            }
        }
        _ => {
            let vk = key.ed25519().ok_or(Reason::BadSignature)?;
            let sig = Signature::from_slice(&s.sig[..s.sig_len]).map_err(|_| Reason::Malformed)?;
            if with_origin {
                let msg = [origin_parts[0], origin_parts[1], origin_parts[2], s.signed].concat();
                vk.verify_strict(&msg, &sig).is_ok()
            } else {
                vk.verify_strict(s.signed, &sig).is_ok()
            }
        }
    };
    if !ok {
        return Err(Reason::BadSignature);
    }
    req.check_window(None, Some(s.expires), false)?;
    let scope = match (s.kind, &s.url_prefix, &s.dir) {
        (_, Some(prefix), _) => Scope::UrlPrefix(prefix),
        (Kind::PathComponent, None, Some(dir)) => Scope::PathPrefix(dir),
        _ => Scope::Exact(&found.path),
    };
    let query_rest = found.upstream.split_once('?').map(|(_, q)| q);
    let admitted = match scope {
        Scope::UrlPrefix(p) => url_prefix_admits(p, req.scheme, req.host, &found.path, query_rest),
        other => other.admits(req.scheme, req.host, &found.path),
    };
    if !admitted {
        return Err(Reason::Scope);
    }
    Ok(Verified {
        format,
        key_name: key.name(),
        not_before: None,
        expires: Some(s.expires),
        token_id: None,
        data: None,
        scope,
        ip_bound: false,
        carry: s.carry,
    })
}

const DUAL_NAMES: [&[u8]; 9] =
    [b"PathGlobs", b"URLPrefix", b"FullPath", b"Starts", b"Expires", b"SessionID", b"Data", b"Headers", b"IPRanges"];

fn parse_dual<'a>(v: &'a [u8], carry: Carry<'a>) -> Result<Dual<'a>, Reason> {
    if v.is_empty() || v.len() > MAX_TOKEN_LEN {
        return Err(Reason::Malformed);
    }
    let mut d = Dual {
        body: &[],
        scope: DualScope::FullPath,
        starts: None,
        expires: 0,
        session_id: None,
        data: None,
        headers: None,
        ip_ranges: None,
        hmac: None,
        sig: [0; 64],
        sig_len: 0,
        carry,
    };
    let (mut seen, mut scopes, mut pos) = (0u16, 0, 0usize);
    let mut end = None;
    let mut expires = None;
    for field in v.split(|&b| b == b'~') {
        let start = pos;
        pos += field.len() + 1;
        if end.is_some() {
            return Err(Reason::Malformed);
        }
        let (name, value) = match field.iter().position(|&b| b == b'=') {
            Some(i) => (&field[..i], Some(&field[i + 1..])),
            None => (field, None),
        };
        if name == b"Signature" || name == b"hmac" {
            let value = value.ok_or(Reason::Malformed)?;
            if name == b"Signature" {
                d.sig_len = util::b64url_into(value, &mut d.sig).ok_or(Reason::Malformed)?;
                if d.sig_len != 64 {
                    return Err(Reason::Malformed);
                }
            } else {
                let hash = match value.len() {
                    40 => Hash::Sha1,
                    64 => Hash::Sha256,
                    _ => return Err(Reason::Malformed),
                };
                d.sig_len = hash.digest_len();
                if !util::hex_exact(value, &mut d.sig[..d.sig_len]) {
                    return Err(Reason::Malformed);
                }
                d.hmac = Some(hash);
            }
            if start == 0 {
                return Err(Reason::Malformed);
            }
            d.body = &v[..start - 1];
            end = Some(start);
            continue;
        }
        let i = DUAL_NAMES.iter().position(|n| *n == name).ok_or(Reason::Malformed)?;
        if seen & (1 << i) != 0 {
            return Err(Reason::Malformed);
        }
        seen |= 1 << i;
        // FullPath is the only field without a value.
        let value = match (i, value) {
            (2, None) => &[][..],
            (2, Some(_)) | (_, None) => return Err(Reason::Malformed),
            (_, Some(b"")) => return Err(Reason::Malformed),
            (_, Some(v)) => v,
        };
        match i {
            0 => {
                d.scope = DualScope::PathGlobs(util::text(value)?);
                scopes += 1;
            }
            1 => {
                d.scope = DualScope::UrlPrefix(decode_prefix(value)?);
                scopes += 1;
            }
            2 => {
                d.scope = DualScope::FullPath;
                scopes += 1;
            }
            3 => d.starts = Some(util::parse_time(value)?),
            4 => expires = Some(util::parse_time(value)?),
            5 => d.session_id = Some(util::text(value)?),
            6 => d.data = Some(util::text(value)?),
            7 => d.headers = Some(value),
            _ => {
                let raw = util::b64url_vec(value, 1024).ok_or(Reason::Malformed)?;
                d.ip_ranges = Some(String::from_utf8(raw).map_err(|_| Reason::Malformed)?);
            }
        }
    }
    d.expires = expires.ok_or(Reason::Malformed)?;
    if scopes != 1 || end.is_none() {
        return Err(Reason::Malformed);
    }
    Ok(d)
}

fn verify_dual<'a>(
    found: &'a Found<'_>,
    d: &'a Dual<'_>,
    keys: &'a Keys,
    req: &Request<'_>,
) -> Result<Verified<'a>, Reason> {
    // The signed value: the token's fields, with FullPath and Headers expanded.
    let expanded;
    let signed: &[u8] = if matches!(d.scope, DualScope::FullPath) || d.headers.is_some() {
        let mut out = Vec::with_capacity(d.body.len() + found.raw_path.len() + 64);
        for (i, field) in d.body.split(|&b| b == b'~').enumerate() {
            if i > 0 {
                out.push(b'~');
            }
            if field == b"FullPath" {
                out.extend_from_slice(b"FullPath=");
                out.extend_from_slice(&found.raw_path);
            } else if let Some(names) = field.strip_prefix(b"Headers=") {
                out.extend_from_slice(b"Headers=");
                for (j, name) in names.split(|&b| b == b',').enumerate() {
                    let n = core::str::from_utf8(name).map_err(|_| Reason::Malformed)?;
                    // A missing header cannot reproduce the signed value.
                    let value = req.header(n).ok_or(Reason::BadSignature)?;
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name);
                    out.push(b'=');
                    out.extend_from_slice(value);
                }
            } else {
                out.extend_from_slice(field);
            }
        }
        expanded = out;
        &expanded
    } else {
        d.body
    };
    let key = match d.hmac {
        Some(hash) => keys
            .iter()
            .find(|k| k.secret_bytes().is_some_and(|s| util::hmac_ok(hash, s, &[signed], &d.sig[..d.sig_len]))),
        None => {
            let sig = Signature::from_slice(&d.sig[..64]).map_err(|_| Reason::Malformed)?;
            keys.iter().find(|k| k.ed25519().is_some_and(|vk| vk.verify_strict(signed, &sig).is_ok()))
        }
    };
    let Some(key) = key else { return Err(keys.miss(d.hmac.is_none())) };
    req.check_window(d.starts, Some(d.expires), false)?;
    let scope = match &d.scope {
        DualScope::PathGlobs(g) => Scope::Globs { list: g, separators: b",!" },
        DualScope::UrlPrefix(p) => Scope::UrlPrefix(p),
        DualScope::FullPath => Scope::Exact(&found.path),
    };
    let query_rest = found.upstream.split_once('?').map(|(_, q)| q);
    let admitted = match scope {
        Scope::UrlPrefix(p) => url_prefix_admits(p, req.scheme, req.host, &found.path, query_rest),
        other => other.admits(req.scheme, req.host, &found.path),
    };
    if !admitted {
        return Err(Reason::Scope);
    }
    if let Some(ranges) = &d.ip_ranges {
        let client = req.client_ip.ok_or(Reason::Ip)?;
        if !ranges.split(',').any(|r| cidr_contains(r.trim(), client)) {
            return Err(Reason::Ip);
        }
    }
    Ok(Verified {
        format: Format::MediaCdn,
        key_name: key.name(),
        not_before: d.starts,
        expires: Some(d.expires),
        token_id: d.session_id,
        data: d.data,
        scope,
        ip_bound: d.ip_ranges.is_some(),
        carry: (!matches!(d.scope, DualScope::FullPath)).then_some(d.carry),
    })
}

/// `addr[/len]`; an entry that does not parse never matches.
fn cidr_contains(range: &str, client: IpAddr) -> bool {
    let (addr, len) = match range.split_once('/') {
        Some((a, l)) => match l.parse::<u8>() {
            Ok(l) => (a, Some(l)),
            Err(_) => return false,
        },
        None => (range, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else { return false };
    let client = util::unmap(client);
    match (net, client) {
        (IpAddr::V4(n), IpAddr::V4(c)) => {
            let l = u32::from(len.unwrap_or(32).min(32));
            let m = u32::MAX.checked_shl(32 - l).unwrap_or(0);
            len.is_none_or(|x| x <= 32) && u32::from(n) & m == u32::from(c) & m
        }
        (IpAddr::V6(n), IpAddr::V6(c)) => {
            let l = u32::from(len.unwrap_or(128).min(128));
            let m = u128::MAX.checked_shl(128 - l).unwrap_or(0);
            len.is_none_or(|x| x <= 128) && u128::from(n) & m == u128::from(c) & m
        }
        _ => false,
    }
}

fn short_sig(sig: &[u8]) -> String {
    let head: String = sig.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{head}… ({} bytes)", sig.len())
}

impl Parsed<'_> {
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        match self {
            Parsed::Signed(s) => {
                let kind = match s.kind {
                    Kind::Url => "signed URL",
                    Kind::UrlPrefix => "signed URL prefix",
                    Kind::Cookie => "signed cookie",
                    Kind::PathComponent => "path component",
                };
                f.push(("form", kind.into()));
                if let Some(p) = &s.url_prefix {
                    f.push(("URLPrefix", p.clone()));
                }
                if let Some(d) = &s.dir {
                    f.push(("prefix", d.clone()));
                }
                f.push(("Expires", s.expires.to_string()));
                f.push(("KeyName", util::printable(s.key_name)));
                f.push(("Signature", short_sig(&s.sig[..s.sig_len])));
            }
            Parsed::Dual(d) => {
                f.push(("form", "dual token".into()));
                match &d.scope {
                    DualScope::PathGlobs(g) => f.push(("PathGlobs", (*g).into())),
                    DualScope::UrlPrefix(p) => f.push(("URLPrefix", p.clone())),
                    DualScope::FullPath => f.push(("FullPath", "(the request path)".into())),
                }
                if let Some(s) = d.starts {
                    f.push(("Starts", s.to_string()));
                }
                f.push(("Expires", d.expires.to_string()));
                if let Some(s) = d.session_id {
                    f.push(("SessionID", s.into()));
                }
                if let Some(s) = d.data {
                    f.push(("Data", s.into()));
                }
                if let Some(h) = d.headers {
                    f.push(("Headers", util::printable(h)));
                }
                if let Some(r) = &d.ip_ranges {
                    f.push(("IPRanges", r.clone()));
                }
                let name = if d.hmac.is_some() { "hmac" } else { "Signature" };
                f.push((name, short_sig(&d.sig[..d.sig_len])));
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = |r: &str, ip: &str| cidr_contains(r, ip.parse().unwrap());
        assert!(c("203.0.113.0/24", "203.0.113.77"));
        assert!(!c("203.0.113.0/24", "203.0.114.1"));
        assert!(c("2001:db8::/32", "2001:db8:1::5"));
        assert!(c("198.51.100.7", "::ffff:198.51.100.7"));
        assert!(!c("2001:db8:4a7f:a732/64", "2001:db8:4a7f:a732::1"), "not an IPv6 address");
        assert!(!c("10.0.0.0/33", "10.0.0.1"));
    }

    #[test]
    fn policy_order_is_strict() {
        let ok = b"URLPrefix=aHR0cDovL2gv:Expires=1:KeyName=k:Signature=AAAA";
        assert!(parse_policy(ok, b':', Kind::Cookie, None).is_ok());
        for bad in [
            &b"Expires=1:URLPrefix=aHR0cDovL2gv:KeyName=k:Signature=AAAA"[..],
            b"URLPrefix=aHR0cDovL2gv:Expires=1:Signature=AAAA",
            b"URLPrefix=aHR0cDovL2gv:Expires=1:KeyName=k:Signature=AAAA:Expires=2",
            b"URLPrefix=aHR0cDovL2gv:Expires=1:KeyName=k",
            b"URLPrefix=Zm9v:Expires=1:KeyName=k:Signature=AAAA",
        ] {
            assert_eq!(parse_policy(bad, b':', Kind::Cookie, None).map(|_| ()).unwrap_err(), Reason::Malformed);
        }
    }
}
