//! CORS for web players: which page origins may read the edge's responses, and
//! whether their requests may carry credentials (cookie mode).
//!
//! `cors.allowed_origins` holds `*` (any origin, never with credentials) or
//! origin patterns, matched against the request's `Origin` header:
//!
//! | pattern | matches |
//! |---|---|
//! | `https://player.example` | exactly that origin (the default port may be written or not) |
//! | `http://localhost:*` | that scheme and host on any port |
//! | `https://*.example.com` | any subdomain of `example.com` (not `example.com` itself), default port |
//! | `https://*.example.com:*` | both wildcards |
//!
//! Hosts are DNS names, IPv4 addresses or bracketed IPv6 addresses, compared
//! case-insensitively. With `cors.allow_credentials` a matched origin gets
//! `Access-Control-Allow-Credentials: true`; combined with `*` the configuration
//! is refused, since any web site could then read protected video with a viewer's
//! cookie.
//!
//! The module is pure: `Cors::grant` turns an `Origin` header into the headers to
//! send, the proxy writes them.

use http::HeaderValue;

/// What a CORS configuration entry failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not `*` and not `scheme://host[:port]`.
    #[error("{0:?} is not an origin pattern (`*`, `https://host`, `http://host:*`, `https://*.domain`)")]
    Syntax(String),
    /// `*` listed with other entries.
    #[error("`*` already allows every origin; list it alone")]
    StarWithOthers,
    /// `*` together with `allow_credentials`.
    #[error(
        "`*` cannot be combined with allow_credentials = true: any web site could read protected video with a \
         viewer's cookie; list the origins that may send credentials instead"
    )]
    StarWithCredentials,
    /// An exposed header name is not a valid header name.
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
}

/// The compiled CORS policy.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    patterns: Vec<Pattern>,
    credentials: bool,
    expose: Option<HeaderValue>,
    max_age: String,
}

/// The CORS headers one response gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `Access-Control-Allow-Origin`: `*` or the request's origin.
    pub allow_origin: HeaderValue,
    /// Send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    https: bool,
    host: Host,
    port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// Exactly this host (lower case).
    Exact(String),
    /// Any host ending in `.suffix` with at least one more label.
    SubdomainOf(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// The scheme's default port (omitted in the `Origin` header).
    Default,
    Exact(u16),
    Any,
}

impl Cors {
    /// Compiles the configuration: `origins` as in `cors.allowed_origins`, `expose` the
    /// response headers scripts may read besides the CORS-safelisted ones.
    pub fn new(
        origins: &[String],
        credentials: bool,
        expose: &[String],
        max_age_secs: u32,
    ) -> Result<Cors, PatternError> {
        let any = origins.iter().any(|o| o.trim() == "*");
        if any && origins.len() > 1 {
            return Err(PatternError::StarWithOthers);
        }
        if any && credentials {
            return Err(PatternError::StarWithCredentials);
        }
        let patterns =
            if any { Vec::new() } else { origins.iter().map(|o| Pattern::parse(o)).collect::<Result<_, _>>()? };
        let mut names = Vec::with_capacity(expose.len());
        for h in expose {
            let name =
                http::HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| PatternError::HeaderName(h.clone()))?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let expose = (!names.is_empty())
            .then(|| names.iter().map(http::HeaderName::as_str).collect::<Vec<_>>().join(", "))
            .and_then(|v| HeaderValue::from_str(&v).ok());
        Ok(Cors { any, patterns, credentials, expose, max_age: max_age_secs.to_string() })
    }

    /// Whether CORS is configured at all.
    pub fn enabled(&self) -> bool {
        self.any || !self.patterns.is_empty()
    }

    /// Whether responses depend on `Origin` (every response then carries `Vary: Origin`,
    /// so a cache never hands one origin's answer to another).
    pub(crate) fn varies(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// The grant for a request's `Origin` header, if that origin may read the response.
    pub(crate) fn grant(&self, origin: Option<&HeaderValue>) -> Option<Grant> {
        if self.any {
            return Some(Grant { allow_origin: HeaderValue::from_static("*"), credentials: false });
        }
        let origin = origin?;
        let o = origin.to_str().ok()?;
        self.patterns
            .iter()
            .any(|p| p.matches(o))
            .then(|| Grant { allow_origin: origin.clone(), credentials: self.credentials })
    }

    /// `Access-Control-Expose-Headers`, if any header is exposed.
    pub(crate) fn expose_headers(&self) -> Option<&HeaderValue> {
        self.expose.as_ref()
    }

    /// `Access-Control-Max-Age` of preflight answers.
    pub fn max_age(&self) -> &str {
        &self.max_age
    }
}

/// Whether `value` (an `Access-Control-Request-Headers` value) is a plain list of header
/// names, and so safe to echo in `Access-Control-Allow-Headers`.
pub(crate) fn is_header_list(value: &[u8]) -> bool {
    value.len() <= 1024
        && value.split(|&b| b == b',').all(|name| {
            let name = name.trim_ascii();
            !name.is_empty() && http::HeaderName::from_bytes(name).is_ok()
        })
}

impl Pattern {
    fn parse(raw: &str) -> Result<Pattern, PatternError> {
        let err = || PatternError::Syntax(raw.to_owned());
        let s = raw.trim().to_ascii_lowercase();
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(err());
        };
        let (host, port) = split_host_port(rest).ok_or_else(err)?;
        let port = match port {
            None => Port::Default,
            Some("*") => Port::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n == default_port(https) => Port::Default,
                Ok(n) if n > 0 && !p.starts_with('0') => Port::Exact(n),
                _ => return Err(err()),
            },
        };
        let host = match host.strip_prefix("*.") {
            Some(suffix)
                if is_dns_name(suffix) && (suffix.contains('.') || suffix == "localhost") && !is_ipv4_like(suffix) =>
            {
                Host::SubdomainOf(suffix.to_owned())
            }
            Some(_) => return Err(err()),
            None if is_dns_name(host) || is_ip_literal(host) => Host::Exact(host.to_owned()),
            None => return Err(err()),
        };
        Ok(Pattern { https, host, port })
    }

    /// Matches a serialised origin (`scheme://host[:port]`, as browsers send it).
    fn matches(&self, origin: &str) -> bool {
        let Some((https, rest)) = origin
            .strip_prefix("https://")
            .map(|r| (true, r))
            .or_else(|| origin.strip_prefix("http://").map(|r| (false, r)))
        else {
            return false;
        };
        if https != self.https {
            return false;
        }
        let Some((host, port)) = split_host_port(rest) else { return false };
        let port_ok = match (self.port, port) {
            (Port::Any, _) | (Port::Default, None) => true,
            (Port::Default, Some(p)) => p.parse::<u16>().is_ok_and(|n| n == default_port(https)),
            (Port::Exact(want), Some(p)) => p.parse::<u16>().is_ok_and(|n| n == want),
            (Port::Exact(want), None) => want == default_port(https),
        };
        port_ok
            && match &self.host {
                Host::Exact(h) => host.eq_ignore_ascii_case(h),
                Host::SubdomainOf(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                        && is_dns_name(host)
                }
            }
    }
}

fn default_port(https: bool) -> u16 {
    if https { 443 } else { 80 }
}

/// `host[:port]` with nothing after it; `[v6]` hosts keep their brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.is_empty() || s.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        return match rest {
            "" => Some((host, None)),
            r => r.strip_prefix(':').filter(|p| !p.is_empty()).map(|p| (host, Some(p))),
        };
    }
    match s.split_once(':') {
        None => Some((s, None)),
        Some((h, p)) if !h.is_empty() && !p.is_empty() && !p.contains(':') => Some((h, Some(p))),
        Some(_) => None,
    }
}

fn is_dns_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A name whose last label is numeric (`127.0.0.1`): an address, never a domain to take subdomains of.
fn is_ipv4_like(h: &str) -> bool {
    h.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

fn is_ip_literal(h: &str) -> bool {
    h.parse::<std::net::Ipv4Addr>().is_ok()
        || h.strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Result<Cors, PatternError> {
        let origins: Vec<String> = origins.iter().map(|s| (*s).to_owned()).collect();
        Cors::new(&origins, credentials, &["x-stile-reason".to_owned()], 600)
    }

    fn grant(c: &Cors, origin: &str) -> Option<(String, bool)> {
        c.grant(Some(&HeaderValue::from_str(origin).unwrap()))
            .map(|g| (g.allow_origin.to_str().unwrap().to_owned(), g.credentials))
    }

    #[test]
    fn star_means_any_origin_without_credentials() {
        let c = cors(&["*"], false).unwrap();
        assert_eq!(grant(&c, "https://evil.example"), Some(("*".into(), false)));
        assert_eq!(c.grant(None).map(|g| g.credentials), Some(false));
        assert!(!c.varies(), "the answer is the same for every origin");
        assert_eq!(cors(&["*"], true).unwrap_err(), PatternError::StarWithCredentials);
        assert_eq!(cors(&["*", "https://a.example"], false).unwrap_err(), PatternError::StarWithOthers);
    }

    #[test]
    fn listed_origins_are_echoed_with_credentials_only_when_asked() {
        let c = cors(&["https://player.example"], false).unwrap();
        assert_eq!(grant(&c, "https://player.example"), Some(("https://player.example".into(), false)));
        let c = cors(&["https://player.example"], true).unwrap();
        assert_eq!(grant(&c, "https://player.example"), Some(("https://player.example".into(), true)));
        assert_eq!(grant(&c, "https://evil.example"), None);
        assert_eq!(c.grant(None), None);
        assert!(c.varies());
    }

    #[test]
    fn pattern_table() {
        for (pattern, origin, want) in [
            ("https://player.example", "https://player.example", true),
            ("https://player.example", "https://PLAYER.example", true),
            ("https://player.example", "https://player.example:443", true),
            ("https://player.example:443", "https://player.example", true),
            ("https://player.example", "http://player.example", false),
            ("https://player.example", "https://player.example:8443", false),
            ("https://player.example", "https://player.example.evil", false),
            ("https://player.example", "https://xplayer.example", false),
            ("https://player.example", "null", false),
            ("https://player.example", "https://player.example/", false),
            ("http://localhost:*", "http://localhost:5173", true),
            ("http://localhost:*", "http://localhost", true),
            ("http://localhost:*", "https://localhost:5173", false),
            ("http://localhost:*", "http://localhost.evil.example:80", false),
            ("http://127.0.0.1:*", "http://127.0.0.1:7404", true),
            ("http://127.0.0.1:*", "http://127.0.0.10:7404", false),
            ("http://[::1]:*", "http://[::1]:8000", true),
            ("http://localhost:8080", "http://localhost:8080", true),
            ("http://localhost:8080", "http://localhost:8081", false),
            ("https://*.example.com", "https://www.example.com", true),
            ("https://*.example.com", "https://a.b.example.com", true),
            ("https://*.example.com", "https://example.com", false),
            ("https://*.example.com", "https://evilexample.com", false),
            ("https://*.example.com", "https://www.example.com.evil", false),
            ("https://*.example.com", "https://www.example.com:8443", false),
            ("https://*.example.com:*", "https://www.example.com:8443", true),
            ("https://*.example.com", "https://.example.com", false),
            ("https://*.example.com", "https://a..example.com", false),
        ] {
            let c = cors(&[pattern], false).unwrap();
            assert_eq!(grant(&c, origin).is_some(), want, "{pattern} vs {origin}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "player.example",
            "ftp://player.example",
            "https://",
            "https://player.example/",
            "https://player.example/path",
            "https://user@player.example",
            "https://player.example?x",
            "https://*",
            "https://*.com",
            "https://foo*.example.com",
            "https://*.*.example.com",
            "https://a.*.example.com",
            "https://player.example:0",
            "https://player.example:65536",
            "https://player.example:08080",
            "https://player.example:",
            "https://player.example:*:*",
            "https://[::1",
            "https://[nope]",
            "https://*.127.0.0.1",
            "https://pla yer.example",
            "https://-player.example",
        ] {
            assert!(matches!(cors(&[bad], false), Err(PatternError::Syntax(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn exposed_headers_and_header_lists() {
        let c = Cors::new(&["*".into()], false, &["x-stile-reason".into(), "Content-Range".into()], 60).unwrap();
        assert_eq!(c.expose_headers().unwrap(), "x-stile-reason, content-range");
        assert_eq!(c.max_age(), "60");
        assert!(matches!(Cors::new(&[], false, &["a b".into()], 1), Err(PatternError::HeaderName(_))));
        assert!(is_header_list(b"range"));
        assert!(is_header_list(b"range, x-custom"));
        assert!(!is_header_list(b"range,,x"));
        assert!(!is_header_list(b"bad header"));
        assert!(!is_header_list(b""));
    }
}
