//! The edge's sequential path to the origin for plain requests
//! ([`crate::proxy::EdgeProxy`]'s `direct_fetch`, `origin.fast_path`).
//!
//! Pingora proxies every request through two halves joined with `try_join!` that pass the
//! response as tasks over two channels (`proxy_h1`), so that a request body can stream
//! up while the response streams down. A `GET` without a body has nothing to stream up:
//! this path writes its head to the origin, reads the response head, and copies the body
//! down chunk by chunk in one loop, over Pingora's own HTTP/1 client and connection pool.
//! What it forwards is what Pingora forwards (the same request filter, hop-by-hop fields
//! removed, the same response filter and downstream writer); anything not of the plain
//! shape [`upstream_head`] accepts goes through Pingora as before.

use http::header;
use pingora::connectors::ConnectorOptions;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::server::configuration::ServerConf;

/// The keep-alive pool of the sequential path (separate from Pingora's proxy pool, sized
/// by the same `origin.keepalive_pool_size`).
pub(crate) struct Fetcher {
    pub(crate) connector: Connector,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fetcher")
    }
}

impl Fetcher {
    /// A pool configured as Pingora configures its own from `conf`.
    pub(crate) fn new(conf: &ServerConf) -> Fetcher {
        Fetcher { connector: Connector::new(Some(ConnectorOptions::from_server_conf(conf))) }
    }
}

/// Fields that make a request something other than a plain `GET`: a body or its framing,
/// an upgrade, or hop-by-hop fields other than `Connection: keep-alive` / `close`.
const NOT_PLAIN: [&str; 11] = [
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
    "expect",
];

/// The head to send upstream for `req` — a copy in HTTP/1.1 without its `Connection`
/// field — when `req` is a plain `GET`: an origin-form target (`/…`), no body, no
/// upgrade, and no hop-by-hop field but a `Connection` naming only `keep-alive` or
/// `close`. `None` for anything else, which Pingora's proxy then forwards with its own
/// rules.
pub(crate) fn upstream_head(req: &RequestHeader) -> Option<RequestHeader> {
    if req.method != http::Method::GET || !req.raw_path().starts_with(b"/") {
        return None;
    }
    if NOT_PLAIN.iter().any(|h| req.headers.contains_key(*h)) {
        return None;
    }
    let plain_connection = req.headers.get_all(header::CONNECTION).into_iter().all(|v| {
        v.as_bytes().split(|&b| b == b',').all(|t| {
            let t = t.trim_ascii();
            t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
        })
    });
    if !plain_connection {
        return None;
    }
    let mut up = req.clone();
    up.remove_header(&header::CONNECTION);
    up.set_version(http::Version::HTTP_11);
    Some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn plain_gets_are_forwarded_without_their_connection_field() {
        for conn in [None, Some("keep-alive"), Some("close"), Some("Keep-Alive"), Some(" keep-alive , close ")] {
            let mut h = vec![("Host", "edge"), ("Accept", "*/*")];
            if let Some(c) = conn {
                h.push(("Connection", c));
            }
            let up = upstream_head(&req("GET", "/vod/a.ts?x=1", &h)).expect("plain");
            assert!(!up.headers.contains_key(header::CONNECTION), "{conn:?}");
            assert_eq!(up.headers.get("accept").unwrap(), "*/*");
            assert_eq!(up.raw_path(), b"/vod/a.ts?x=1");
            assert_eq!(up.version, http::Version::HTTP_11);
        }
    }

    #[test]
    fn anything_else_goes_through_pingora() {
        assert!(upstream_head(&req("HEAD", "/a", &[])).is_none());
        assert!(upstream_head(&req("POST", "/a", &[])).is_none());
        assert!(upstream_head(&req("GET", "*", &[])).is_none());
        assert!(upstream_head(&req("GET", "http://origin/a", &[])).is_none());
        for h in NOT_PLAIN {
            assert!(upstream_head(&req("GET", "/a", &[(h, "0")])).is_none(), "{h}");
        }
        // A field nominated by `Connection` is hop-by-hop: Pingora strips it.
        for c in ["x-secret", "keep-alive, x-secret", "upgrade", ""] {
            assert!(upstream_head(&req("GET", "/a", &[("Connection", c)])).is_none(), "{c:?}");
        }
    }
}
