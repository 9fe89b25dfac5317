//! Token transports: finding the token in a request, and the request target the
//! origin gets once every trace of it is removed.
//!
//! Three transports, in fixed precedence — the first one present wins:
//! 1. path prefix `/<segment>/<token>/rest/of/path` (segment default `_st`);
//! 2. query parameter (default `st`); the parameter given twice is `malformed`,
//!    since components that pick different copies would disagree;
//! 3. cookie (default `stile`, only in cookie mode); with several cookies of the
//!    name the first is used (browsers send the most specific path first).
//!
//! Whatever wins, the query parameter is removed from the upstream query (other
//! parameters are kept byte for byte) and the cookie from the upstream `Cookie`
//! header: the origin never sees a token.

use stile_token::Reason;

/// Where the token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// No token anywhere.
    None,
    /// Path prefix.
    Path,
    /// Query parameter.
    Query,
    /// Cookie.
    Cookie,
}

impl Transport {
    /// Every transport, for metric label pre-registration.
    pub const ALL: [Transport; 4] = [Transport::None, Transport::Path, Transport::Query, Transport::Cookie];

    /// The metric and log label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::None => "none",
            Transport::Path => "path",
            Transport::Query => "query",
            Transport::Cookie => "cookie",
        }
    }
}

/// Names of the transports, from the configuration.
#[derive(Clone, Debug)]
pub struct TransportNames {
    /// `/<segment>/` of path-prefix tokens, with both slashes.
    pub path_prefix: String,
    /// Query parameter name.
    pub query_param: String,
    /// Cookie name, when cookie mode is on.
    pub cookie: Option<String>,
}

/// A request target split into its token and what remains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located<'a> {
    /// The token string, if any transport carried one.
    pub token: Option<&'a str>,
    /// Which transport it came from.
    pub transport: Transport,
    /// The raw path after removing a path-prefix token (not yet canonical).
    pub path: &'a [u8],
    /// The raw query (without `?`), token parameter still in it.
    pub query: Option<&'a [u8]>,
    /// Whether the query holds the token parameter (so the upstream query must be rebuilt).
    pub query_has_token: bool,
}

/// Finds the token in a request target (`/path?query`) and its `Cookie` headers.
pub fn locate<'a, I>(target: &'a [u8], cookie_headers: I, names: &TransportNames) -> Result<Located<'a>, Reason>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let (mut path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    let mut token = None;
    let mut transport = Transport::None;
    if let Some(rest) = path.strip_prefix(names.path_prefix.as_bytes()) {
        let end = rest.iter().position(|&b| b == b'/').ok_or(Reason::Malformed)?;
        token = Some(as_str(&rest[..end])?);
        transport = Transport::Path;
        path = &rest[end..];
    }
    let mut query_has_token = false;
    if let Some(q) = query {
        for pair in q.split(|&b| b == b'&') {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            if name == names.query_param.as_bytes() {
                if query_has_token {
                    return Err(Reason::Malformed);
                }
                query_has_token = true;
                if token.is_none() {
                    token = Some(as_str(value)?);
                    transport = Transport::Query;
                }
            }
        }
    }
    if token.is_none()
        && let Some(name) = &names.cookie
        && let Some(v) = cookie_headers.into_iter().find_map(|h| find_cookie(h, name.as_bytes()))
    {
        token = Some(as_str(v)?);
        transport = Transport::Cookie;
    }
    Ok(Located { token, transport, path, query, query_has_token })
}

/// The upstream request target: the canonical path and the query without the
/// token parameter.
pub fn upstream_target(canonical_path: &str, query: Option<&[u8]>, query_param: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical_path.len() + query.map_or(0, <[u8]>::len) + 1);
    out.extend_from_slice(canonical_path.as_bytes());
    if let Some(q) = query {
        let mut first = true;
        for pair in q.split(|&b| b == b'&') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            if name == query_param.as_bytes() || pair.is_empty() {
                continue;
            }
            out.push(if first { b'?' } else { b'&' });
            first = false;
            out.extend_from_slice(pair);
        }
    }
    out
}

/// A `Cookie` header value without the named cookie, or `None` if it does not carry it.
pub fn strip_cookie(header: &[u8], name: &str) -> Option<Vec<u8>> {
    find_cookie(header, name.as_bytes())?;
    let mut out = Vec::with_capacity(header.len());
    for c in header.split(|&b| b == b';') {
        let c = c.trim_ascii();
        if c.is_empty() || cookie_name(c) == name.as_bytes() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(c);
    }
    Some(out)
}

fn find_cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').map(<[u8]>::trim_ascii).find_map(|c| {
        let (n, v) = c.split_at(c.iter().position(|&b| b == b'=')?);
        (n == name).then(|| &v[1..])
    })
}

fn cookie_name(c: &[u8]) -> &[u8] {
    c.split(|&b| b == b'=').next().unwrap_or_default()
}

fn as_str(b: &[u8]) -> Result<&str, Reason> {
    if b.is_empty() {
        return Err(Reason::Malformed);
    }
    std::str::from_utf8(b).map_err(|_| Reason::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> TransportNames {
        TransportNames { path_prefix: "/_st/".into(), query_param: "st".into(), cookie: Some("stile".into()) }
    }

    fn check(target: &str, cookie: &str, expect: Result<(Option<&str>, Transport, &str), Reason>) {
        let cookies: Vec<&[u8]> = if cookie.is_empty() { vec![] } else { vec![cookie.as_bytes()] };
        let got = locate(target.as_bytes(), cookies, &names())
            .map(|l| (l.token, l.transport, std::str::from_utf8(l.path).unwrap()));
        assert_eq!(got, expect, "{target} / {cookie}");
    }

    #[test]
    fn transports_and_precedence() {
        use Transport::*;
        check("/vod/a.ts", "", Ok((Option::None, None, "/vod/a.ts")));
        check("/_st/TOK/vod/a.ts", "", Ok((Some("TOK"), Path, "/vod/a.ts")));
        check("/vod/a.ts?st=TOK", "", Ok((Some("TOK"), Query, "/vod/a.ts")));
        check("/vod/a.ts?x=1&st=TOK&y", "", Ok((Some("TOK"), Query, "/vod/a.ts")));
        check("/vod/a.ts", "a=b; stile=TOK; c=d", Ok((Some("TOK"), Cookie, "/vod/a.ts")));
        check("/vod/a.ts", "stile=ONE; stile=TWO", Ok((Some("ONE"), Cookie, "/vod/a.ts")));
        check("/_st/P/vod/a.ts?st=Q", "stile=C", Ok((Some("P"), Path, "/vod/a.ts")));
        check("/vod/a.ts?st=Q", "stile=C", Ok((Some("Q"), Query, "/vod/a.ts")));
        check("/vod/a.ts?xst=Q&stx=R", "", Ok((Option::None, None, "/vod/a.ts")));
        check("/vod/a.ts?st=A&st=B", "", Err(Reason::Malformed));
        check("/vod/a.ts?st=", "", Err(Reason::Malformed));
        check("/vod/a.ts?st", "", Err(Reason::Malformed));
        check("/_st/TOK", "", Err(Reason::Malformed));
        check("/_st//vod/a.ts", "", Err(Reason::Malformed));
        check("/_stx/TOK/vod/a.ts", "", Ok((Option::None, None, "/_stx/TOK/vod/a.ts")));
    }

    #[test]
    fn upstream_target_drops_only_the_token() {
        let t = |p, q: Option<&str>| String::from_utf8(upstream_target(p, q.map(str::as_bytes), "st")).unwrap();
        assert_eq!(t("/a.ts", None), "/a.ts");
        assert_eq!(t("/a.ts", Some("st=T")), "/a.ts");
        assert_eq!(t("/a.ts", Some("x=1&st=T&y=%20")), "/a.ts?x=1&y=%20");
        assert_eq!(t("/a.ts", Some("st=T&x")), "/a.ts?x");
        assert_eq!(t("/a.ts", Some("")), "/a.ts");
    }

    #[test]
    fn cookie_stripping() {
        let s = |h: &str| strip_cookie(h.as_bytes(), "stile").map(|v| String::from_utf8(v).unwrap());
        assert_eq!(s("a=1"), None);
        assert_eq!(s("stile=T"), Some(String::new()));
        assert_eq!(s("a=1; stile=T;b=2"), Some("a=1; b=2".into()));
        assert_eq!(s("stilex=1; stile=T"), Some("stilex=1".into()));
    }
}
