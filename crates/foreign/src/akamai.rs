//! Akamai EdgeAuth / Auth Token 2.0.
//!
//! Implemented from Akamai's published documentation:
//! - Property Manager "Auth Token 2.0 Verification" behavior
//!   (<https://techdocs.akamai.com/property-mgr/docs/auth-token-2-0-ver>,
//!   options in <https://techdocs.akamai.com/property-mgr/reference/ga-verify-token-authorization>:
//!   location cookie / query string / header, token name, hex key and
//!   transition key, algorithm SHA256 / SHA1 / MD5, "escape token inputs",
//!   "ignore query string", salt);
//! - Adaptive Media Delivery "Generate and apply a token"
//!   (<https://techdocs.akamai.com/adaptive-media-delivery/docs/generate-a-token-and-apply-it-to-content>:
//!   token name `hdnts`, `st`/`exp`, session id, "Token in URI" path form);
//! - the token generator documentation Akamai publishes with its SDKs
//!   (<https://pypi.org/project/akamai-edgeauth/>: parameters `token_name`
//!   (default `__token__`), `key` (hex), `algorithm`, `salt`, `ip`,
//!   `payload` (`data`), `session_id` (`id`), `start_time`, `end_time`,
//!   `field_delimiter` (default `~`), `acl_delimiter` (default `!`),
//!   `escape_early`; ACL tokens vs URL tokens).
//!
//! The token is `[ip=…~][st=…~]exp=…[~acl=…][~id=…][~data=…]~hmac=<hex>`.
//! The HMAC covers the token text before `~hmac=`; a URL token (no `acl`)
//! also covers `~url=<request URL>` and, when a salt is configured,
//! `~salt=<salt>`, neither of which is in the token. With "escape token
//! inputs" on, the URL is escaped as the SDK escapes it (`quote_plus`, hex
//! in lower case). ACL entries are separated by the ACL delimiter; `*`
//! matches any run of characters and `?` one.
//!
//! Where the vendor's code and documentation disagree (see docs/migration.md):
//! the SDK never escapes the `acl` field although older Akamai examples show
//! `acl=%2f*`; we accept both (escaped ACLs are decoded for matching, the MAC
//! covers the text as sent). The SDK treats `start_time=0` as absent.

use std::net::IpAddr;

use stile_token::Reason;

use crate::keys::Key;
use crate::util::{self, Hash, Pair};
use crate::{Carry, ConfigError, Detail, Format, Found, Keys, Request, Scope, Transport, Verified};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Akamai settings, mirroring the property's behavior options.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Token name in the query string, cookie and path segment
    /// (`__token__` by default; Adaptive Media Delivery uses `hdnts`).
    pub token_name: String,
    /// Field delimiter (default `~`).
    pub field_delimiter: char,
    /// ACL delimiter (default `!`).
    pub acl_delimiter: char,
    /// HMAC hash (default SHA-256).
    pub algorithm: Hash,
    /// "Escape token input": URL tokens sign the escaped URL.
    pub escape_early: bool,
    /// "Ignore query string": URL tokens sign the path only (default on).
    pub ignore_query_string: bool,
    /// Salt appended to the signed string, if the property has one.
    pub salt: Option<String>,
    /// Look for the token in the query string.
    pub query: bool,
    /// Look for the token in a cookie.
    pub cookie: bool,
    /// Look for the token as a path segment `/<token_name>=<token>/` ("Token in URI").
    pub path: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            token_name: "__token__".into(),
            field_delimiter: '~',
            acl_delimiter: '!',
            algorithm: Hash::Sha256,
            escape_early: false,
            ignore_query_string: true,
            salt: None,
            query: true,
            cookie: true,
            path: true,
        }
    }
}

/// The fields of a token, for signing (tests, benches, migration tools).
#[derive(Clone, Debug, Default)]
pub struct Claims<'a> {
    /// `ip`.
    pub ip: Option<&'a str>,
    /// `st`.
    pub start: Option<u64>,
    /// `exp`.
    pub expires: u64,
    /// `acl` (an ACL token); `None` makes a URL token for `url`.
    pub acl: Option<&'a str>,
    /// The URL a URL token is for (signed, not included).
    pub url: Option<&'a str>,
    /// `id`.
    pub id: Option<&'a str>,
    /// `data`.
    pub data: Option<&'a str>,
}

/// Signs a token the way the vendor's generator documentation describes.
/// `None` if the key is not a shared secret or neither `acl` nor `url` is set.
pub fn sign(cfg: &Config, key: &Key, c: &Claims<'_>) -> Option<String> {
    let d = cfg.field_delimiter;
    let esc = |s: &str| if cfg.escape_early { escape(s.as_bytes()) } else { s.to_owned() };
    let mut fields = Vec::new();
    if let Some(ip) = c.ip {
        fields.push(format!("ip={}", esc(ip)));
    }
    if let Some(st) = c.start {
        fields.push(format!("st={st}"));
    }
    fields.push(format!("exp={}", c.expires));
    if let Some(acl) = c.acl {
        fields.push(format!("acl={acl}"));
    }
    if let Some(id) = c.id {
        fields.push(format!("id={}", esc(id)));
    }
    if let Some(data) = c.data {
        fields.push(format!("data={}", esc(data)));
    }
    let mut signed = fields.clone();
    match (c.acl, c.url) {
        (Some(_), _) => {}
        (None, Some(url)) => signed.push(format!("url={}", esc(url))),
        (None, None) => return None,
    }
    if let Some(salt) = &cfg.salt {
        signed.push(format!("salt={salt}"));
    }
    let msg = signed.join(&d.to_string());
    let mac = util::hmac(cfg.algorithm, key.secret_bytes()?, &[msg.as_bytes()]);
    fields.push(format!("hmac={}", hex(&mac)));
    Some(fields.join(&d.to_string()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Escapes as the SDK's `escape_early` does: Python's `quote_plus` (only
/// `A-Z a-z 0-9 _ . - ~` kept, space as `+`), hex digits in lower case.
pub fn escape(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// A parsed token (fields borrowed from the request).
#[derive(Clone, Debug)]
pub(crate) struct Parsed<'a> {
    /// The token text before `<delim>hmac=`.
    body: &'a [u8],
    /// The MAC, decoded.
    mac: [u8; 32],
    mac_len: usize,
    ip: Option<&'a [u8]>,
    st: Option<u64>,
    exp: u64,
    acl: Option<String>,
    url: Option<&'a [u8]>,
    id: Option<&'a str>,
    data: Option<&'a str>,
    carry: Carry<'a>,
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        crate::check_name("akamai token_name", &self.token_name)?;
        for (what, d) in
            [("akamai field_delimiter", self.field_delimiter), ("akamai acl_delimiter", self.acl_delimiter)]
        {
            // Akamai's list of characters a delimiter may not be, plus anything non-printable.
            if !d.is_ascii_graphic() || d.is_ascii_alphanumeric() || "=&/\\:%*?".contains(d) {
                return Err(ConfigError::Delimiter(what, d));
            }
        }
        if self.field_delimiter == self.acl_delimiter {
            return Err(ConfigError::Delimiter("akamai acl_delimiter", self.acl_delimiter));
        }
        if !(self.query || self.cookie || self.path) {
            return Err(ConfigError::Invalid("akamai: no token location enabled".into()));
        }
        if self.salt.as_ref().is_some_and(|s| s.len() > 256) {
            return Err(ConfigError::Invalid("akamai: salt longer than 256 bytes".into()));
        }
        Ok(())
    }

    pub(crate) fn locate<'a>(&self, target: &'a [u8], cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        let (path, query) = util::split_target(target);
        let name = self.token_name.as_bytes();
        let mut seg_prefix = name.to_vec();
        seg_prefix.push(b'=');
        let mut raw_path = path.to_vec();
        let mut hit: Option<(Transport, &'a [u8], Carry<'a>)> = None;
        if self.path
            && let Some((value, rest, start)) = crate::path_segment(path, &seg_prefix)?
        {
            let seg = util::text(&path[start..start + seg_prefix.len() + value.len()])?;
            hit = Some((Transport::Path, value, Carry::PathSegment(seg)));
            raw_path = rest;
        }
        let qp: Option<Pair<'a>> = if self.query { util::single_param(query, name)? } else { None };
        if hit.is_none()
            && let (Some(p), Some(q)) = (qp, query)
        {
            hit = Some((Transport::Query, p.value, Carry::Query(util::text(&q[p.start..p.end])?)));
        }
        if hit.is_none()
            && self.cookie
            && let Some(v) = util::find_cookie(cookies, name)
        {
            let cname = util::cookie_name(cookies, name).ok_or(Reason::Malformed)?;
            hit = Some((Transport::Cookie, v, Carry::Cookie { name: cname, value: util::text(v)? }));
        }
        let Some((transport, token, carry)) = hit else { return Ok(None) };
        let parsed = self.parse(token, carry)?;
        let canon = util::canonical(&raw_path)?;
        let upstream = util::upstream(&canon, query, |n| self.query && n == name);
        Ok(Some(Found {
            format: Format::Akamai,
            transport,
            path: canon,
            upstream,
            raw_path,
            raw_query: query,
            detail: Detail::Akamai(parsed),
        }))
    }

    fn parse<'a>(&self, token: &'a [u8], carry: Carry<'a>) -> Result<Parsed<'a>, Reason> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Reason::Malformed);
        }
        let d = u8::try_from(self.field_delimiter).map_err(|_| Reason::Malformed)?;
        let mut p = Parsed {
            body: &[],
            mac: [0; 32],
            mac_len: 0,
            ip: None,
            st: None,
            exp: 0,
            acl: None,
            url: None,
            id: None,
            data: None,
            carry,
        };
        let mut seen = 0u8;
        let mut exp = None;
        let mut offset = 0usize;
        let mut done = false;
        for field in token.split(|&b| b == d) {
            let start = offset;
            offset += field.len() + 1;
            if done {
                // Nothing may follow the MAC.
                return Err(Reason::Malformed);
            }
            let eq = field.iter().position(|&b| b == b'=').ok_or(Reason::Malformed)?;
            let (name, value) = (&field[..eq], &field[eq + 1..]);
            let bit = match name {
                b"ip" => 1,
                b"st" => 2,
                b"exp" => 4,
                b"acl" => 8,
                b"url" => 16,
                b"id" => 32,
                b"data" => 64,
                b"hmac" => 128,
                _ => return Err(Reason::Malformed),
            };
            if seen & bit != 0 || value.is_empty() {
                return Err(Reason::Malformed);
            }
            seen |= bit;
            match name {
                b"ip" => p.ip = Some(value),
                b"st" => p.st = Some(util::parse_time(value)?),
                b"exp" => exp = Some(util::parse_time(value)?),
                b"acl" => p.acl = Some(decode_acl(value)?),
                b"url" => p.url = Some(value),
                b"id" => p.id = Some(util::text(value)?),
                b"data" => p.data = Some(util::text(value)?),
                _ => {
                    // hmac: the body is everything before "<delim>hmac=".
                    if start == 0 || value.len() != 2 * self.algorithm.digest_len() {
                        return Err(Reason::Malformed);
                    }
                    p.body = &token[..start - 1];
                    p.mac_len = self.algorithm.digest_len();
                    if !util::hex_exact(value, &mut p.mac[..p.mac_len]) {
                        return Err(Reason::Malformed);
                    }
                    done = true;
                }
            }
        }
        p.exp = exp.ok_or(Reason::Malformed)?;
        if !done || (p.acl.is_some() && p.url.is_some()) {
            return Err(Reason::Malformed);
        }
        Ok(p)
    }

    /// The signed body with each value decoded, as the vendor's edge
    /// verifies it; `None` if a value does not decode.
    fn decoded_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let d = u8::try_from(self.field_delimiter).ok()?;
        let mut out = Vec::with_capacity(body.len());
        for (i, field) in body.split(|&b| b == d).enumerate() {
            if i > 0 {
                out.push(d);
            }
            let eq = field.iter().position(|&b| b == b'=')?;
            let (name, value) = (&field[..=eq], &field[eq + 1..]);
            out.extend_from_slice(name);
            let plain = util::percent_decode(value)?;
            match name {
                b"ip=" | b"id=" | b"data=" if self.escape_early => {
                    let spaced: Vec<u8> = plain.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
                    out.extend_from_slice(escape(&spaced).as_bytes());
                }
                _ => out.extend_from_slice(&plain),
            }
        }
        Some(out)
    }

    pub(crate) fn verify<'a>(
        &self,
        found: &'a Found<'_>,
        p: &'a Parsed<'_>,
        keys: &'a Keys,
        req: &Request<'_>,
    ) -> Result<Verified<'a>, Reason> {
        let d = [u8::try_from(self.field_delimiter).map_err(|_| Reason::Malformed)?];
        // URL tokens sign the request URL, which the token does not carry.
        let url_field = match (&p.acl, p.url) {
            (None, None) => {
                let mut url = found.raw_path.clone();
                if !self.ignore_query_string {
                    let q = util::upstream("", found.raw_query, |n| self.query && n == self.token_name.as_bytes());
                    url.extend_from_slice(q.as_bytes());
                }
                // Escaped as the generator escapes the URL it was given: the decoded one.
                let url = if self.escape_early {
                    escape(&util::percent_decode(&url).ok_or(Reason::Malformed)?).into_bytes()
                } else {
                    url
                };
                let mut f = Vec::with_capacity(url.len() + 5);
                f.extend_from_slice(&d);
                f.extend_from_slice(b"url=");
                f.extend_from_slice(&url);
                Some(f)
            }
            _ => None,
        };
        let salt_field = self.salt.as_ref().map(|s| [&d[..], b"salt=", s.as_bytes()].concat());
        // The body as sent; and, for tokens with escapes, the body as Akamai's
        // edge reads it: the value URL-decoded, `ip`/`id`/`data` escaped again
        // when "escape token input" is on (older generators escape the ACL in
        // the token but sign it decoded).
        let decoded = if p.body.iter().any(|&b| b == b'%' || b == b'+') { self.decoded_body(p.body) } else { None };
        let bodies = [Some(p.body), decoded.as_deref()];
        let key = keys
            .iter()
            .filter_map(|k| Some((k, k.secret_bytes()?)))
            .find(|(_, secret)| {
                bodies.iter().flatten().any(|body| {
                    let parts =
                        [*body, url_field.as_deref().unwrap_or_default(), salt_field.as_deref().unwrap_or_default()];
                    util::hmac_ok(self.algorithm, secret, &parts, &p.mac[..p.mac_len])
                })
            })
            .map(|(k, _)| k);
        let Some(key) = key else { return Err(keys.miss(false)) };
        req.check_window(p.st, Some(p.exp), false)?;
        let scope = match &p.acl {
            Some(acl) => Scope::Globs { list: acl, separators: core::slice::from_ref(acl_delim(self)) },
            None => Scope::Exact(&found.path),
        };
        if !scope.admits(req.scheme, req.host, &found.path) {
            return Err(Reason::Scope);
        }
        if let Some(ip) = p.ip {
            let bound = parse_ip(ip).ok_or(Reason::Malformed)?;
            match req.client_ip {
                Some(c) if util::unmap(c) == bound => {}
                _ => return Err(Reason::Ip),
            }
        }
        Ok(Verified {
            format: Format::Akamai,
            key_name: key.name(),
            not_before: p.st,
            expires: Some(p.exp),
            token_id: p.id,
            data: p.data,
            scope,
            ip_bound: p.ip.is_some(),
            carry: matches!(scope, Scope::Globs { .. }).then_some(p.carry),
        })
    }
}

fn acl_delim(cfg: &Config) -> &'static u8 {
    // The delimiter is validated ASCII punctuation; map it to a static byte.
    static ASCII: [u8; 128] = {
        let mut t = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            t[i] = i as u8;
            i += 1;
        }
        t
    };
    &ASCII[(cfg.acl_delimiter as usize) & 0x7f]
}

/// An ACL as sent, or decoded when the generator escaped it (`%2f*`).
fn decode_acl(v: &[u8]) -> Result<String, Reason> {
    let bytes = if v.contains(&b'%') { util::percent_decode(v).ok_or(Reason::Malformed)? } else { v.to_vec() };
    if bytes.first() != Some(&b'/') && bytes.first() != Some(&b'*') {
        return Err(Reason::Malformed);
    }
    String::from_utf8(bytes).map_err(|_| Reason::Malformed)
}

fn parse_ip(v: &[u8]) -> Option<IpAddr> {
    let decoded;
    let v = if v.contains(&b'%') {
        decoded = util::percent_decode(v)?;
        &decoded[..]
    } else {
        v
    };
    core::str::from_utf8(v).ok()?.parse::<IpAddr>().ok().map(util::unmap)
}

impl Parsed<'_> {
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if let Some(ip) = self.ip {
            f.push(("ip", util::printable(ip)));
        }
        if let Some(st) = self.st {
            f.push(("st", st.to_string()));
        }
        f.push(("exp", self.exp.to_string()));
        if let Some(acl) = &self.acl {
            f.push(("acl", acl.clone()));
        }
        if let Some(url) = self.url {
            f.push(("url", util::printable(url)));
        }
        if self.acl.is_none() && self.url.is_none() {
            f.push(("mode", "url token (signs the request URL)".into()));
        }
        if let Some(id) = self.id {
            f.push(("id", id.into()));
        }
        if let Some(data) = self.data {
            f.push(("data", data.into()));
        }
        f.push(("hmac", format!("{}… ({} bytes)", hex(&self.mac[..4]), self.mac_len)));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config as Any, KeyEncoding};

    const KEY: &str = "52a152a152a152a152a152a152a1";

    fn keys() -> Keys {
        Keys::new(vec![Key::parse_secret("k", KEY, KeyEncoding::Hex).unwrap()]).unwrap()
    }

    fn verify(cfg: &Config, target: &str, cookie: &str, req: &Request<'_>) -> Result<(String, Option<u64>), Reason> {
        let any = Any::Akamai(cfg.clone());
        let cookies: Vec<&[u8]> = if cookie.is_empty() { vec![] } else { vec![cookie.as_bytes()] };
        let found = any.locate(target.as_bytes(), &cookies)?.ok_or(Reason::Missing)?;
        let keys = keys();
        let v = any.verify(&found, &keys, req)?;
        Ok((found.upstream.clone(), v.expires))
    }

    #[test]
    fn acl_token_in_every_location() {
        let cfg = Config { token_name: "hdnts".into(), ..Config::default() };
        let k = keys();
        let key = k.iter().next().unwrap();
        let tok = sign(&cfg, key, &Claims { expires: 2000, acl: Some("/vod/*"), ..Default::default() }).unwrap();
        let req = Request::new("https", "h", 1000);
        let want = Ok(("/vod/a/b.ts".to_string(), Some(2000)));
        assert_eq!(verify(&cfg, &format!("/vod/a/b.ts?hdnts={tok}"), "", &req), want);
        assert_eq!(verify(&cfg, "/vod/a/b.ts", &format!("x=1; hdnts={tok}"), &req), want);
        let esc = Config { token_name: "hdnts".into(), ..Config::default() };
        let tok2 = sign(&esc, key, &Claims { expires: 2000, acl: Some("%2fvod%2f*"), ..Default::default() }).unwrap();
        assert_eq!(verify(&cfg, &format!("/vod/hdnts={tok2}/a/b.ts"), "", &req), want);
        assert_eq!(verify(&cfg, &format!("/other/x?hdnts={tok}"), "", &req), Err(Reason::Scope));
        let late = Request::new("https", "h", 2000);
        assert_eq!(verify(&cfg, &format!("/vod/a?hdnts={tok}"), "", &late), Err(Reason::Expired));
        let bad = tok.replace("exp=2000", "exp=2001");
        assert_eq!(verify(&cfg, &format!("/vod/a?hdnts={bad}"), "", &req), Err(Reason::BadSignature));
        assert_eq!(verify(&cfg, &format!("/vod/a?hdnts={tok}&hdnts={tok}"), "", &req), Err(Reason::Malformed));
    }

    #[test]
    fn url_token_ip_and_window() {
        let cfg = Config::default();
        let k = keys();
        let key = k.iter().next().unwrap();
        let c = Claims {
            ip: Some("203.0.113.9"),
            start: Some(900),
            expires: 2000,
            url: Some("/vod/a.ts"),
            id: Some("sess-1"),
            ..Default::default()
        };
        let tok = sign(&cfg, key, &c).unwrap();
        let mut req = Request::new("https", "h", 1000);
        let t = format!("/vod/a.ts?x=1&__token__={tok}");
        assert_eq!(verify(&cfg, &t, "", &req), Err(Reason::Ip));
        req.client_ip = Some("::ffff:203.0.113.9".parse().unwrap());
        assert_eq!(verify(&cfg, &t, "", &req), Ok(("/vod/a.ts?x=1".into(), Some(2000))));
        assert_eq!(verify(&cfg, &format!("/vod/b.ts?__token__={tok}"), "", &req), Err(Reason::BadSignature));
        let early = Request { now: 800, ..req };
        assert_eq!(verify(&cfg, &t, "", &early), Err(Reason::NotYetValid));
    }

    #[test]
    fn malformed_tokens() {
        let req = Request::new("https", "h", 1000);
        let h = "0".repeat(64);
        for tok in [
            "exp=2000".to_string(),
            format!("acl=/*~hmac={h}"),
            format!("exp=2000~acl=/*~hmac={h}~id=x"),
            format!("exp=2000~exp=2000~acl=/*~hmac={h}"),
            format!("exp=2000~acl=/*~hmac={}", "0".repeat(40)),
            format!("exp=2000~acl=/*~bogus=1~hmac={h}"),
            format!("exp=20x0~acl=/*~hmac={h}"),
            format!("exp=2000~acl=/*~url=/a~hmac={h}"),
            format!("hmac={h}"),
        ] {
            assert_eq!(
                verify(&Config::default(), &format!("/a?__token__={tok}"), "", &req),
                Err(Reason::Malformed),
                "{tok}"
            );
        }
    }

    /// An older generator's published output (data from
    /// <https://gist.github.com/dvl/7da9ee28479d9274ec0d>, key `abcd`): the
    /// ACL is escaped in the token and signed decoded.
    #[test]
    fn older_generators_escaped_acl() {
        let keys = Keys::new(vec![Key::parse_secret("k", "abcd", KeyEncoding::Hex).unwrap()]).unwrap();
        let any = Any::Akamai(Config::default());
        let mut req = Request::new("https", "h", 300);
        req.client_ip = Some("127.0.0.1".parse().unwrap());
        for tok in [
            "st=123~exp=423~acl=%2f*~hmac=c9d583d364a7d83aa75e0896f7a864aca2e470b009caf700d601da365d44c831",
            "ip=127.0.0.1~st=123~exp=423~acl=%2f*~hmac=7d807cbc347ae77142215d27859d3ef95d1998230f05a45d953b14aba6987e58",
        ] {
            let t = format!("/any/path.ts?__token__={tok}");
            let found = any.locate(t.as_bytes(), &[]).unwrap().unwrap();
            let v = any.verify(&found, &keys, &req).unwrap();
            assert_eq!(v.scope, Scope::Globs { list: "/*", separators: b"!" });
            let bad = t.replace("exp=423", "exp=424");
            let found = any.locate(bad.as_bytes(), &[]).unwrap().unwrap();
            assert_eq!(any.verify(&found, &keys, &req).unwrap_err(), Reason::BadSignature);
        }
    }

    #[test]
    fn escape_matches_quote_plus_lower() {
        assert_eq!(escape(b"/a b/c~d?e=1"), "%2fa+b%2fc~d%3fe%3d1");
    }
}
