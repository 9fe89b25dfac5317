//! `tls.redirect_http`: plain-HTTP requests answered with `308` to the same path
//! and query over `https://`, for hosts this edge has a certificate for.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{CertResolver, TlsMetrics};

/// The redirect of plain requests to HTTPS.
#[derive(Debug)]
pub(crate) struct Redirect {
    /// `:port` for the `Location`, empty for 443.
    port: String,
    resolver: Arc<CertResolver>,
    metrics: Arc<TlsMetrics>,
    /// `client.trusted_hops` > 0: a proxy in front may say the viewer used HTTPS.
    trust_forwarded_proto: bool,
}

impl Redirect {
    /// Redirects to `port` with the hosts `resolver` covers.
    pub(crate) fn new(
        port: u16,
        resolver: Arc<CertResolver>,
        metrics: Arc<TlsMetrics>,
        trust_forwarded_proto: bool,
    ) -> Redirect {
        let port = if port == 443 { String::new() } else { format!(":{port}") };
        Redirect { port, resolver, metrics, trust_forwarded_proto }
    }

    /// Whether this request must be redirected: it came over plain HTTP and no trusted
    /// proxy in front says the viewer's connection was HTTPS.
    pub(crate) fn applies(&self, session: &Session) -> bool {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if tls {
            return false;
        }
        let forwarded_https = self.trust_forwarded_proto
            && session
                .req_header()
                .headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        !forwarded_https
    }

    /// Writes the answer: `308` with `Location: https://host[:port]<path and query as
    /// received>`, or `400` when the request names no host this edge has a certificate
    /// for (never a redirect to a host chosen by the client). Returns the status.
    pub(crate) async fn answer(&self, session: &mut Session) -> pingora::Result<u16> {
        let req = session.req_header();
        let host = req.headers.get(header::HOST).map(http::HeaderValue::as_bytes).unwrap_or_default();
        let location = location(host, &self.port, req.raw_path(), |h| self.resolver.covers_host(h));
        let head = req.method == http::Method::HEAD;
        let (mut resp, body): (ResponseHeader, &'static [u8]) = match location {
            Some(l) => {
                let mut r = ResponseHeader::build(308, Some(4))?;
                r.insert_header(header::LOCATION, l)?;
                (r, b"")
            }
            None => (ResponseHeader::build(400, Some(4))?, b"unknown host\n"),
        };
        let status = resp.status.as_u16();
        resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
        // The Location carries the viewer's link, token included: never cached.
        resp.insert_header(header::CACHE_CONTROL, "private, no-store")?;
        if status == 400 {
            resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        }
        let end = head || body.is_empty();
        session.write_response_header(Box::new(resp), end).await?;
        if !end {
            session.write_response_body(Some(Bytes::from_static(body)), true).await?;
        }
        if status == 308 {
            self.metrics.redirect();
        }
        Ok(status)
    }
}

/// The redirect target, or `None` when `host` (a `Host` header value, port allowed) is
/// not a plain host name or address that `covered` accepts, or the result would not be
/// a valid header value.
fn location(host: &[u8], port: &str, target: &[u8], covered: impl Fn(&str) -> bool) -> Option<http::HeaderValue> {
    let host = std::str::from_utf8(host).ok()?;
    let name = match host.strip_prefix('[') {
        Some(v6) => &host[..v6.find(']')? + 2],
        None => host.split(':').next()?,
    };
    let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    if name.is_empty() || !plain || !covered(name) {
        return None;
    }
    if !target.starts_with(b"/") {
        return None;
    }
    let mut l = Vec::with_capacity(8 + name.len() + port.len() + target.len());
    l.extend_from_slice(b"https://");
    l.extend_from_slice(name.as_bytes());
    l.extend_from_slice(port.as_bytes());
    l.extend_from_slice(target);
    http::HeaderValue::from_bytes(&l).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_keeps_path_and_query_and_only_known_hosts() {
        let known = |h: &str| h == "edge.example" || h == "[::1]";
        let loc = |host: &str, target: &str| {
            location(host.as_bytes(), ":8443", target.as_bytes(), known).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            loc("edge.example", "/vod/a.m3u8?st=TOKEN&x=1").as_deref(),
            Some("https://edge.example:8443/vod/a.m3u8?st=TOKEN&x=1")
        );
        assert_eq!(
            loc("edge.example:8080", "/_st/T/vod/a.ts").as_deref(),
            Some("https://edge.example:8443/_st/T/vod/a.ts")
        );
        assert_eq!(loc("[::1]:8080", "/a").as_deref(), Some("https://[::1]:8443/a"));
        assert_eq!(loc("evil.example", "/a"), None, "a host without a certificate is never a redirect target");
        assert_eq!(loc("edge.example@evil.example", "/a"), None);
        assert_eq!(loc("", "/a"), None);
        assert_eq!(loc("edge.example", "*"), None);
        assert_eq!(loc("edge.example", "http://evil.example/a"), None);
    }
}
