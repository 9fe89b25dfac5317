//! nginx `secure_link` and `secure_link_secret`.
//!
//! Implemented from the nginx documentation of `ngx_http_secure_link_module`
//! (<https://nginx.org/en/docs/http/ngx_http_secure_link_module.html>):
//! - `secure_link $arg_md5,$arg_expires;` with `secure_link_md5 expression;`:
//!   the link carries the MD5 of the expression, base64url without padding,
//!   and an optional expiry (Unix seconds); the link is valid while the
//!   expiry is not in the past (`$secure_link` is `1`), expired links give
//!   `0`, bad hashes the empty string;
//! - `secure_link_secret word;`: `/prefix/<hex md5>/link` where the hash is
//!   the MD5 of the link text followed by the secret.
//!
//! The expression is nginx's own syntax, with the secret written as
//! `$secret` instead of literally, so that keys travel over Stile's push
//! path and rotate (the verifier tries each key). Supported variables:
//! `$secure_link_expires`, `$uri` (the decoded path), `$remote_addr`,
//! `$host`, `$arg_<name>` (raw), `$secret`; `${name}` also works.
//!
//! The test suite runs the real nginx (Debian's nginx-light) as the oracle.

use core::fmt;

use md5::{Digest, Md5};
use stile_token::Reason;

use crate::util;
use crate::{ConfigError, Detail, Format, Found, Keys, Request, Scope, Transport, Verified};

/// nginx settings. As configuration (TOML), one table named after the variant:
/// `[secure_link]` (`md5_arg`, `expires_arg`, `expression`) or
/// `[secure_link_secret]` (`location`, `rewrite_to`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Config {
    /// `secure_link $arg_<md5_arg>[,$arg_<expires_arg>]` + `secure_link_md5 <expression>`.
    SecureLink {
        /// Query parameter carrying the hash (`md5`).
        md5_arg: String,
        /// Query parameter carrying the expiry (`expires`); `None`: links never expire.
        expires_arg: Option<String>,
        /// The `secure_link_md5` expression, secret written as `$secret`.
        expression: String,
    },
    /// `secure_link_secret` in `location <location>`; `rewrite ^ <rewrite_to>$secure_link`.
    SecureLinkSecret {
        /// The location prefix, one path segment with both slashes (`/p/`).
        location: String,
        /// What the origin gets in front of the link (`/secure/` in nginx's example).
        rewrite_to: String,
    },
}

impl Default for Config {
    /// The example of nginx's documentation.
    fn default() -> Config {
        Config::SecureLink {
            md5_arg: "md5".into(),
            expires_arg: Some("expires".into()),
            expression: "$secure_link_expires$uri$remote_addr $secret".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(String),
    Expires,
    Uri,
    RemoteAddr,
    Host,
    Arg(String),
    Secret,
}

/// A parsed `secure_link_md5` expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Expression(Vec<Part>);

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Literals may hold a secret an operator left in place: never print them.
        write!(f, "Expression({} parts)", self.0.len())
    }
}

impl Expression {
    /// Parses nginx variable syntax.
    pub fn parse(s: &str) -> Result<Expression, ConfigError> {
        let b = s.as_bytes();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                let ch = s[i..].chars().next().unwrap_or('?');
                lit.push(ch);
                i += ch.len_utf8();
                continue;
            }
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                let end = b[i + 2..].iter().position(|&c| c == b'}').ok_or_else(|| bad("unclosed ${"))?;
                (&s[i + 2..i + 2 + end], i + 3 + end)
            } else {
                let n = b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
                (&s[i + 1..i + 1 + n], i + 1 + n)
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(core::mem::take(&mut lit)));
            }
            parts.push(match name {
                "secure_link_expires" => Part::Expires,
                "uri" => Part::Uri,
                "remote_addr" => Part::RemoteAddr,
                "host" => Part::Host,
                "secret" => Part::Secret,
                n if n.starts_with("arg_") && n.len() > 4 => Part::Arg(n[4..].into()),
                "" => return Err(bad("a lone $")),
                other => return Err(bad(&format!("unsupported variable ${other}"))),
            });
            i = next;
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if !parts.contains(&Part::Secret) {
            return Err(bad("the expression must contain $secret (the secret travels as a key)"));
        }
        Ok(Expression(parts))
    }

    fn has(&self, p: &Part) -> bool {
        self.0.contains(p)
    }
}

fn bad(s: &str) -> ConfigError {
    ConfigError::Expression(s.into())
}

#[derive(Clone, Debug)]
pub(crate) enum Parsed<'a> {
    SecureLink { expression: Expression, hash: [u8; 16], expires: Option<(&'a [u8], u64)> },
    Secret { hash: [u8; 16], link: &'a [u8] },
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Config::SecureLink { md5_arg, expires_arg, expression } => {
                crate::check_name("nginx md5_arg", md5_arg)?;
                if let Some(e) = expires_arg {
                    crate::check_name("nginx expires_arg", e)?;
                }
                let ex = Expression::parse(expression)?;
                if ex.has(&Part::Expires) != expires_arg.is_some() {
                    return Err(bad("$secure_link_expires must appear exactly when expires_arg is set"));
                }
                Ok(())
            }
            Config::SecureLinkSecret { location, rewrite_to } => {
                let seg = location.strip_prefix('/').and_then(|l| l.strip_suffix('/'));
                if seg.is_none_or(|s| s.is_empty() || s.contains('/')) {
                    return Err(ConfigError::Invalid(format!("nginx location {location:?} must be one segment, /p/")));
                }
                if !rewrite_to.starts_with('/') || !rewrite_to.ends_with('/') {
                    return Err(ConfigError::Invalid(format!(
                        "nginx rewrite_to {rewrite_to:?} must start and end with /"
                    )));
                }
                Ok(())
            }
        }
    }

    pub(crate) fn locate<'a>(&self, target: &'a [u8], _cookies: &[&'a [u8]]) -> Result<Option<Found<'a>>, Reason> {
        let (path, query) = util::split_target(target);
        match self {
            Config::SecureLink { md5_arg, expires_arg, expression } => {
                let Some(m) = util::single_param(query, md5_arg.as_bytes())? else { return Ok(None) };
                let expression = Expression::parse(expression).map_err(|_| Reason::Malformed)?;
                let mut hash = [0u8; 16];
                if util::b64url_into(m.value, &mut hash) != Some(16) {
                    return Err(Reason::Malformed);
                }
                let expires = match expires_arg {
                    Some(name) => {
                        let e = util::single_param(query, name.as_bytes())?.ok_or(Reason::Malformed)?;
                        let t = util::parse_time(e.value)?;
                        if t == 0 {
                            return Err(Reason::Malformed);
                        }
                        Some((e.value, t))
                    }
                    None => None,
                };
                let canon = util::canonical(path)?;
                let upstream = util::upstream(&canon, query, |n| {
                    n == md5_arg.as_bytes() || expires_arg.as_ref().is_some_and(|e| n == e.as_bytes())
                });
                Ok(Some(Found {
                    format: Format::NginxSecureLink,
                    transport: Transport::Query,
                    path: canon,
                    upstream,
                    raw_path: path.to_vec(),
                    raw_query: query,
                    detail: Detail::Nginx(Parsed::SecureLink { expression, hash, expires }),
                }))
            }
            Config::SecureLinkSecret { location, rewrite_to } => {
                let Some(rest) = path.strip_prefix(location.as_bytes()) else { return Ok(None) };
                // As nginx reads it: 32 hex digits, '/', then the link (the rest of the raw target).
                let slash = rest.iter().position(|&b| b == b'/').ok_or(Reason::Malformed)?;
                let mut hash = [0u8; 16];
                if slash != 32 || !util::hex_exact(&rest[..32], &mut hash) {
                    return Err(Reason::Malformed);
                }
                let link_start = location.len() + 33;
                let link = &target[link_start..];
                if link.is_empty() {
                    return Err(Reason::Malformed);
                }
                let mut raw_path = rewrite_to.as_bytes().to_vec();
                raw_path.extend_from_slice(&path[link_start..]);
                let canon = util::canonical(&raw_path)?;
                let upstream = util::upstream(&canon, query, |_| false);
                Ok(Some(Found {
                    format: Format::NginxSecureLink,
                    transport: Transport::Path,
                    path: canon,
                    upstream,
                    raw_path,
                    raw_query: query,
                    detail: Detail::Nginx(Parsed::Secret { hash, link }),
                }))
            }
        }
    }

    pub(crate) fn verify<'a>(
        &self,
        found: &'a Found<'_>,
        p: &'a Parsed<'_>,
        keys: &'a Keys,
        req: &Request<'_>,
    ) -> Result<Verified<'a>, Reason> {
        let (key, expires, scope) = match p {
            Parsed::SecureLink { expression, hash, expires } => {
                let uri = util::percent_decode(found.path.as_bytes()).ok_or(Reason::Malformed)?;
                let addr = req.client_ip.map(util::unmap);
                if expression.has(&Part::RemoteAddr) && addr.is_none() {
                    return Err(Reason::Ip);
                }
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                let host = req.host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()));
                let host = host.map_or(req.host, |(h, _)| h).to_ascii_lowercase();
                let key = keys.iter().find(|k| {
                    let Some(secret) = k.secret_bytes() else { return false };
                    let mut md5 = Md5::new();
                    for part in &expression.0 {
                        match part {
                            Part::Lit(s) => md5.update(s.as_bytes()),
                            Part::Expires => md5.update(expires.map_or(&[][..], |e| e.0)),
                            Part::Uri => md5.update(&uri),
                            Part::RemoteAddr => md5.update(addr.as_bytes()),
                            Part::Host => md5.update(host.as_bytes()),
                            Part::Arg(name) => {
                                let v = util::pairs(found.raw_query.unwrap_or_default())
                                    .find(|p| p.name == name.as_bytes());
                                md5.update(v.map_or(&[][..], |p| p.value));
                            }
                            Part::Secret => md5.update(secret),
                        }
                    }
                    util::ct_eq(&md5.finalize(), hash)
                });
                let scope = if expression.has(&Part::Uri) { Scope::Exact(&found.path) } else { Scope::PathPrefix("/") };
                (key, expires.map(|e| e.1), scope)
            }
            Parsed::Secret { hash, link } => {
                let key = keys.iter().find(|k| {
                    let Some(secret) = k.secret_bytes() else { return false };
                    let mut md5 = Md5::new();
                    md5.update(link);
                    md5.update(secret);
                    util::ct_eq(&md5.finalize(), hash)
                });
                (key, None, Scope::Exact(&found.path))
            }
        };
        let Some(key) = key else { return Err(keys.miss(false)) };
        // nginx: `expires < now` is expired, so the expiry second itself still passes.
        req.check_window(None, expires, true)?;
        Ok(Verified {
            format: Format::NginxSecureLink,
            key_name: key.name(),
            not_before: None,
            expires,
            token_id: None,
            data: None,
            scope,
            ip_bound: matches!(p, Parsed::SecureLink { expression, .. } if expression.has(&Part::RemoteAddr)),
            carry: None,
        })
    }
}

impl Parsed<'_> {
    pub(crate) fn fields(&self) -> Vec<(&'static str, String)> {
        let short =
            |h: &[u8; 16]| format!("{}… (16 bytes)", h[..4].iter().map(|b| format!("{b:02x}")).collect::<String>());
        match self {
            Parsed::SecureLink { hash, expires, expression } => {
                let mut f = vec![("form", "secure_link".to_string()), ("md5", short(hash))];
                f.push(("expires", expires.map_or_else(|| "never".into(), |e| e.1.to_string())));
                f.push(("expression_parts", expression.0.len().to_string()));
                f
            }
            Parsed::Secret { hash, link } => {
                vec![("form", "secure_link_secret".into()), ("md5", short(hash)), ("link", util::printable(link))]
            }
        }
    }
}

/// The `md5` value of a `secure_link` URL for the default expression (tests, benches).
pub fn sign_default(secret: &[u8], expires: u64, uri: &str, remote_addr: &str) -> String {
    use base64::Engine as _;
    let mut md5 = Md5::new();
    md5.update(expires.to_string().as_bytes());
    md5.update(uri.as_bytes());
    md5.update(remote_addr.as_bytes());
    md5.update(b" ");
    md5.update(secret);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(md5.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let e = Expression::parse("$secure_link_expires$uri$remote_addr $secret").unwrap();
        assert_eq!(e.0, vec![Part::Expires, Part::Uri, Part::RemoteAddr, Part::Lit(" ".into()), Part::Secret]);
        let e = Expression::parse("${uri}x$arg_id$secret").unwrap();
        assert_eq!(e.0, vec![Part::Uri, Part::Lit("x".into()), Part::Arg("id".into()), Part::Secret]);
        for bad in ["$uri secret", "$secret$cookie_a", "${secret", "$ $secret"] {
            assert!(Expression::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{e:?}"), "Expression(4 parts)");
    }
}
