//! Bunny token authentication (advanced, "v2": `token=HS256-…`).
//!
//! Implemented from bunny.net's published documentation
//! (<https://docs.bunny.net/cdn/security/token-authentication/advanced>:
//! parameters `token`, `expires`, `token_path`, `token_countries`,
//! `token_countries_blocked`, `token_ignore_params`, `limit`; the query form
//! `…/file?token=HS256-…&expires=…` and the path form
//! `/bcdn_token=HS256-…&…&expires=…/path/file`; IP locking) and the
//! signing reference Bunny publishes beside it
//! (<https://github.com/BunnyWay/BunnyCDN.TokenAuthentication>, README
//! "Token format": `HS256-` + base64url without padding of an HMAC-SHA256
//! under the security key; parameters sorted by name and joined as
//! `name=value` with `&`).
//!
//! The signed message is the signature path (`token_path` when given, else
//! the request path), the expiry, the client address when the token is
//! IP-bound, and the sorted parameters other than `token` and `expires`
//! (with `token_ignore_params=true`: that pair and `token_path` only).
//!
//! Where Bunny's own libraries and documentation disagree (docs/migration.md):
//! the README writes the message as `{path}{expires}{params}{userIp}` with
//! the address as text at the end, while every current SDK (and the test
//! vectors Bunny publishes, `e2e/vectors.json`) marks IP-bound tokens
//! `HS256-1-` and puts the address as 4 raw bytes (IPv4) or the 16 bytes of
//! its /64 (IPv6) between the expiry and the parameters. We verify both:
//! `HS256-1-` with the SDK layout, and an unmarked token against the README
//! layout when [`Config::ip_validation`] is on. With `token_ignore_params`
//! the SDKs leave the country lists out of the MAC, so anyone can strip
//! them; we still enforce whatever lists the URL carries.

use std::net::IpAddr;

use stile_token::Reason;

use crate::util::{self, Hash};
use crate::{Carry, ConfigError, Detail, Format, Found, Keys, Request, Scope, Transport, Verified};

/// Most signed parameters in one URL.
pub const MAX_PARAMS: usize = 32;

/// Bunny settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Query parameter of the token (`token`).
    pub token_param: String,
    /// Path-segment name of the path form (`bcdn_token`).
    pub path_name: String,
    /// The pull zone's "Token IP Validation": also accept unmarked tokens
    /// that sign the client address as text (the README layout).
    pub ip_validation: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config { token_param: "token".into(), path_name: "bcdn_token".into(), ip_validation: false }
    }
}

/// Parameters Bunny reads itself; never passed to the origin.
const OWN: [&[u8]; 7] = [
    b"token",
    b"expires",
    b"token_path",
    b"token_countries",
    b"token_countries_blocked",
    b"token_ignore_params",
    b"limit",
];

#[derive(Clone, Debug)]
pub(crate) struct Parsed<'a> {
    ip_flag: bool,
    mac: [u8; 32],
    expires: &'a [u8],
    expires_at: u64,
    token_path: Option<String>,
    countries: Option<String>,
    blocked: Option<String>,
    ignore_params: bool,
    /// The signed parameters, decoded, sorted by name.
    params: Vec<(Vec<u8>, Vec<u8>)>,
    /// The signed parameter string, `name=value` joined with `&` (built once, at locate).
    signed: Vec<u8>,
    carry: Option<Carry<'a>>,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        crate::check_name("bunny token_param", &self.token_param)?;
        crate::check_name("bunny path_name", &self.path_name)
    }

    pub(crate) fn locate<'a>(&self, target: &'a [u8], _cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        let (path, query) = util::split_target(target);
        let mut seg = self.path_name.as_bytes().to_vec();
        seg.push(b'=');
        let (transport, raw_path, pairs_src, token, carry) =
            if let Some((value, rest, start)) = crate::path_segment(path, &seg)? {
                // The segment is a query string whose first pair is the token.
                if start != 1 {
                    return Err(Reason::Malformed);
                }
                let segment = util::text(&path[start..start + seg.len() + value.len()])?;
                let tok_end = value.iter().position(|&b| b == b'&').unwrap_or(value.len());
                let src = value.get(tok_end + 1..).unwrap_or_default();
                (Transport::Path, rest, src, &value[..tok_end], Some(Carry::PathSegment(segment)))
            } else {
                let Some(p) = util::single_param(query, self.token_param.as_bytes())? else { return Ok(None) };
                (Transport::Query, path.to_vec(), query.unwrap_or_default(), p.value, None)
            };
        let (ip_flag, b64) = if let Some(r) = token.strip_prefix(b"HS256-1-") {
            (true, r)
        } else {
            (false, token.strip_prefix(b"HS256-").ok_or(Reason::Malformed)?)
        };
        let mut mac = [0u8; 32];
        if util::b64url_into(b64, &mut mac) != Some(32) || b64.contains(&b'=') {
            return Err(Reason::Malformed);
        }
        let mut p = Parsed {
            ip_flag,
            mac,
            expires: &[],
            expires_at: 0,
            token_path: None,
            countries: None,
            blocked: None,
            ignore_params: false,
            params: Vec::new(),
            signed: Vec::new(),
            carry,
        };
        let mut own = (usize::MAX, 0usize, 0usize);
        for (n, pair) in util::pairs(pairs_src).enumerate() {
            if n >= MAX_PARAMS {
                return Err(Reason::Malformed);
            }
            let name = form_decode(pair.name)?;
            let value = form_decode(pair.value)?;
            if name == self.token_param.as_bytes() && transport == Transport::Query {
                continue;
            }
            if OWN.contains(&name.as_slice()) {
                own = (own.0.min(pair.start), own.1.max(pair.end), own.2 + 1);
            }
            if p.params.iter().any(|(k, _)| *k == name) || (name == b"expires" && !p.expires.is_empty()) {
                return Err(Reason::Malformed);
            }
            match name.as_slice() {
                b"expires" => {
                    p.expires = pair.value;
                    p.expires_at = util::parse_time(pair.value)?;
                    continue;
                }
                b"token_path" => p.token_path = Some(String::from_utf8(value.clone()).map_err(|_| Reason::Malformed)?),
                b"token_countries" => {
                    p.countries = Some(String::from_utf8(value.clone()).map_err(|_| Reason::Malformed)?)
                }
                b"token_countries_blocked" => {
                    p.blocked = Some(String::from_utf8(value.clone()).map_err(|_| Reason::Malformed)?)
                }
                b"token_ignore_params" => p.ignore_params = value == b"true",
                _ => {}
            }
            p.params.push((name, value));
        }
        if p.expires.is_empty() {
            return Err(Reason::Malformed);
        }
        if p.token_path.as_deref().is_some_and(|t| !t.starts_with('/')) {
            return Err(Reason::Malformed);
        }
        if p.ignore_params {
            p.params.retain(|(k, _)| k == b"token_ignore_params" || k == b"token_path");
        }
        p.params.sort();
        for (i, (k, v)) in p.params.iter().enumerate() {
            if i > 0 {
                p.signed.push(b'&');
            }
            p.signed.extend_from_slice(k);
            p.signed.push(b'=');
            p.signed.extend_from_slice(v);
        }
        // A query token is carried only when Bunny's own pairs are contiguous.
        if transport == Transport::Query && p.token_path.is_some() {
            let q = query.unwrap_or_default();
            let tok = util::single_param(query, self.token_param.as_bytes())?.ok_or(Reason::Malformed)?;
            let (s, e) = (own.0.min(tok.start), own.1.max(tok.end));
            let inside = util::pairs(&q[s..e]).count();
            if inside == own.2 + 1 {
                p.carry = Some(Carry::Query(util::text(&q[s..e])?));
            }
        }
        let canon = util::canonical(&raw_path)?;
        let drop_query = transport == Transport::Query;
        let upstream =
            util::upstream(&canon, query, |n| drop_query && (OWN.contains(&n) || n == self.token_param.as_bytes()));
        Ok(Some(Found {
            format: Format::Bunny,
            transport,
            path: canon,
            upstream,
            raw_path,
            raw_query: query,
            detail: Detail::Bunny(p),
        }))
    }

    pub(crate) fn verify<'a>(
        &self,
        found: &'a Found<'_>,
        p: &'a Parsed<'_>,
        keys: &'a Keys,
        req: &Request<'_>,
    ) -> Result<Verified<'a>, Reason> {
        let sig_path: &[u8] = p.token_path.as_deref().map_or(&found.raw_path, str::as_bytes);
        let data = &p.signed;
        let client = req.client_ip.map(util::unmap);
        // IPv6: the Go SDK and Bunny's published vectors sign the /64, the
        // PHP, Node and Java SDKs' tests the whole address; either binds.
        let ip_variants = match (p.ip_flag, client) {
            (false, _) => [Some(IpBytes::none()), None],
            (true, Some(ip @ IpAddr::V6(v6))) => [Some(IpBytes::of(ip)), Some(IpBytes::full(v6.octets()))],
            (true, Some(ip)) => [Some(IpBytes::of(ip)), None],
            (true, None) => return Err(Reason::Ip),
        };
        let ip_text = match (p.ip_flag, self.ip_validation, client) {
            (false, true, Some(ip)) => Some(ip.to_string()),
            (false, true, None) => return Err(Reason::Ip),
            _ => None,
        };
        let key = keys.iter().find(|k| {
            let Some(secret) = k.secret_bytes() else { return false };
            ip_variants.iter().flatten().any(|ip| {
                let parts: [&[u8]; 5] = [
                    sig_path,
                    p.expires,
                    ip.as_slice(),
                    data,
                    ip_text.as_deref().map(str::as_bytes).unwrap_or_default(),
                ];
                util::hmac_ok(Hash::Sha256, secret, &parts, &p.mac)
            })
        });
        let Some(key) = key else { return Err(keys.miss(false)) };
        req.check_window(None, Some(p.expires_at), false)?;
        let scope = match &p.token_path {
            Some(tp) => Scope::PathPrefix(tp),
            None => Scope::Exact(&found.path),
        };
        // Bunny compares the request path with token_path; we use the canonical path.
        if !scope.admits(req.scheme, req.host, &found.path) {
            return Err(Reason::Scope);
        }
        req.check_countries(p.countries.as_deref().map(str::as_bytes), p.blocked.as_deref().map(str::as_bytes))?;
        Ok(Verified {
            format: Format::Bunny,
            key_name: key.name(),
            not_before: None,
            expires: Some(p.expires_at),
            token_id: None,
            data: None,
            scope,
            ip_bound: p.ip_flag || ip_text.is_some(),
            carry: if p.token_path.is_some() { p.carry } else { None },
        })
    }
}

/// The address bytes an IP-bound token signs: IPv4's 4 bytes, or the 16
/// bytes of an IPv6 address with the low 64 bits cleared.
struct IpBytes {
    buf: [u8; 16],
    len: usize,
}

impl IpBytes {
    fn none() -> IpBytes {
        IpBytes { buf: [0; 16], len: 0 }
    }

    fn of(ip: IpAddr) -> IpBytes {
        let mut b = IpBytes::none();
        match ip {
            IpAddr::V4(v4) => {
                b.buf[..4].copy_from_slice(&v4.octets());
                b.len = 4;
            }
            IpAddr::V6(v6) => {
                b.buf[..8].copy_from_slice(&v6.octets()[..8]);
                b.len = 16;
            }
        }
        b
    }

    fn full(octets: [u8; 16]) -> IpBytes {
        IpBytes { buf: octets, len: 16 }
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Form decoding as the SDKs' parsers do (`%XX`, and `+` as a space).
fn form_decode(b: &[u8]) -> Result<Vec<u8>, Reason> {
    let mut v = util::percent_decode(b).ok_or(Reason::Malformed)?;
    // `+` was not produced by an escape only where the raw byte was `+`.
    let mut i = 0;
    let mut j = 0;
    while i < b.len() {
        if b[i] == b'%' {
            i += 3;
        } else {
            if b[i] == b'+' {
                v[j] = b' ';
            }
            i += 1;
        }
        j += 1;
    }
    Ok(v)
}

/// What [`sign`] puts in a URL.
#[derive(Clone, Debug, Default)]
pub struct Claims<'a> {
    /// The path of the file (or directory, for the path form).
    pub path: &'a str,
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// `token_path`.
    pub token_path: Option<&'a str>,
    /// `token_countries`.
    pub countries: Option<&'a str>,
    /// `token_countries_blocked`.
    pub blocked: Option<&'a str>,
    /// Bind to this client address (`HS256-1-`).
    pub ip: Option<IpAddr>,
    /// Use the path form.
    pub path_form: bool,
}

/// Signs a URL target with the SDK layout (for tests and benches).
pub fn sign(secret: &[u8], c: &Claims<'_>) -> String {
    let mut params: Vec<(&str, &str)> = Vec::new();
    if let Some(v) = c.countries {
        params.push(("token_countries", v));
    }
    if let Some(v) = c.blocked {
        params.push(("token_countries_blocked", v));
    }
    if let Some(v) = c.token_path {
        params.push(("token_path", v));
    }
    params.sort();
    let data: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let data = data.join("&");
    let expires = c.expires.to_string();
    let ip = c.ip.map(|ip| IpBytes::of(util::unmap(ip)));
    let sig_path = c.token_path.unwrap_or(c.path);
    let mac = util::hmac(
        Hash::Sha256,
        secret,
        &[sig_path.as_bytes(), expires.as_bytes(), ip.as_ref().map_or(&[][..], IpBytes::as_slice), data.as_bytes()],
    );
    use base64::Engine as _;
    let flag = if c.ip.is_some() { "1-" } else { "" };
    let token = format!("HS256-{flag}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac));
    let tail: String = params.iter().map(|(k, v)| format!("&{k}={}", url_escape(v))).collect();
    if c.path_form {
        format!("/bcdn_token={token}{tail}&expires={expires}{}", c.path)
    } else {
        format!("{}?token={token}{tail}&expires={expires}", c.path)
    }
}

fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Parsed<'_> {
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("token", format!("HS256-{}… (32 bytes)", if self.ip_flag { "1-" } else { "" })),
            ("ip_bound", self.ip_flag.to_string()),
            ("expires", self.expires_at.to_string()),
        ];
        if let Some(v) = &self.token_path {
            f.push(("token_path", v.clone()));
        }
        if let Some(v) = &self.countries {
            f.push(("token_countries", v.clone()));
        }
        if let Some(v) = &self.blocked {
            f.push(("token_countries_blocked", v.clone()));
        }
        if self.ignore_params {
            f.push(("token_ignore_params", "true".into()));
        }
        let signed: Vec<String> =
            self.params.iter().map(|(k, v)| format!("{}={}", util::printable(k), util::printable(v))).collect();
        f.push(("signed_params", signed.join("&")));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config as Any, Key};

    fn run(target: &str, req: &Request<'_>) -> Result<String, Reason> {
        let any = Any::Bunny(Config::default());
        let found = any.locate(target.as_bytes(), &[])?.ok_or(Reason::Missing)?;
        let keys = Keys::new(vec![Key::secret("zone", b"SecurityKey").unwrap()]).unwrap();
        any.verify(&found, &keys, req)?;
        Ok(found.upstream.clone())
    }

    #[test]
    fn signer_round_trips_every_form() {
        let mut req = Request::new("https", "z.b-cdn.net", 1000);
        req.client_ip = Some("2001:db8:1:2::99".parse().unwrap());
        req.country = stile_token::Country::parse("CA");
        let c = Claims {
            path: "/v/a/seg.ts",
            expires: 2000,
            token_path: Some("/v/a/"),
            countries: Some("CA,US"),
            ip: Some("2001:db8:1:2::1".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(run(&sign(b"SecurityKey", &c), &req), Ok("/v/a/seg.ts".into()));
        let pf = Claims { path_form: true, ..c.clone() };
        assert_eq!(run(&sign(b"SecurityKey", &pf), &req), Ok("/v/a/seg.ts".into()));
        req.country = stile_token::Country::parse("FR");
        assert_eq!(run(&sign(b"SecurityKey", &c), &req), Err(Reason::Geo));
        req.country = stile_token::Country::parse("CA");
        req.client_ip = Some("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(run(&sign(b"SecurityKey", &c), &req), Err(Reason::BadSignature));
        let other = Claims { path: "/v/b/x.ts", ..c };
        assert_eq!(run(&sign(b"SecurityKey", &other).replace("/v/b/x.ts", "/w/x.ts"), &req), Err(Reason::BadSignature));
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode(b"a+b%2Bc").unwrap(), b"a b+c");
        assert_eq!(form_decode(b"%2").unwrap_err(), Reason::Malformed);
    }
}
