//! The cache key: what makes two requests the same object.
//!
//! Parts, in order, each framed by its length (so no two different sets of parts
//! frame to the same bytes): a format tag, the name of the origin pool serving
//! the path (every origin of a pool serves the same objects, so a fill from any
//! of them is shared; with the one-origin shorthand it is `default`), the
//! canonical token-free path (what the edge asks the origin for), then each
//! configured content-selecting query parameter present (name and raw value, in
//! the order of `cache.key_query_params`, repeated ones in request order). The
//! token (path prefix, query or cookie), other query parameters, cookies and
//! every other request header never enter it: two viewers with different links
//! to one segment share one entry.

use pingora::cache::CacheKey;

/// What [`build`] needs, borrowed from the request.
#[derive(Debug)]
pub(crate) struct KeyParts<'a> {
    /// The origin pool's name.
    pub(crate) pool: &'a str,
    /// The token-free upstream target: the canonical path, then `?` and the query
    /// without the token parameter.
    pub(crate) target: &'a [u8],
}

/// The framed primary key bytes (hashed by Pingora into the 128-bit key).
pub(crate) fn frame(parts: &KeyParts<'_>, params: &[String]) -> Vec<u8> {
    let (path, query) = split_target(parts.target);
    let mut out = Vec::with_capacity(16 + parts.pool.len() + path.len() + 32);
    push(&mut out, b"stile-cache-key/1");
    push(&mut out, parts.pool.as_bytes());
    push(&mut out, path);
    for name in params {
        for (n, v) in query_pairs(query) {
            if n == name.as_bytes() {
                push(&mut out, n);
                push(&mut out, v);
            }
        }
    }
    out
}

/// The Pingora cache key for these parts.
pub(crate) fn build(parts: &KeyParts<'_>, params: &[String]) -> CacheKey {
    CacheKey::new(frame(parts, params), "")
}

/// The path part of a target (before `?`).
pub(crate) fn path_of(target: &[u8]) -> &[u8] {
    split_target(target).0
}

/// Whether the target's query carries a low-latency HLS delivery directive
/// (`_HLS_msn`): the answer is a blocking playlist reload.
pub(crate) fn is_ll_hls_request(target: &[u8]) -> bool {
    query_pairs(split_target(target).1).any(|(n, _)| n == b"_HLS_msn")
}

fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[]),
    }
}

fn query_pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &[][..]),
    })
}

fn push(out: &mut Vec<u8>, part: &[u8]) {
    // Targets are bounded far below 4 GiB (`validate::MAX_TARGET_LEN`).
    out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(part);
}

#[cfg(test)]
mod tests {
    use pingora::cache::key::CacheHashKey;

    use super::*;

    fn params() -> Vec<String> {
        vec!["_HLS_msn".into(), "_HLS_part".into(), "_HLS_skip".into()]
    }

    fn key(pool: &str, target: &str) -> [u8; 16] {
        build(&KeyParts { pool, target: target.as_bytes() }, &params()).primary_bin()
    }

    #[test]
    fn only_content_selecting_parameters_count() {
        let base = key("origin", "/vod/abc/seg1.ts");
        assert_eq!(key("origin", "/vod/abc/seg1.ts?x=1&utm=mail"), base, "other parameters are not in the key");
        assert_eq!(key("origin", "/vod/abc/seg1.ts?"), base);
        assert_ne!(key("origin", "/vod/abc/seg2.ts"), base);
        assert_ne!(key("other", "/vod/abc/seg1.ts"), base, "the origin pool is");
        let ll = key("origin", "/live/a.m3u8?_HLS_msn=5&_HLS_part=1");
        assert_eq!(key("origin", "/live/a.m3u8?_HLS_part=1&x=y&_HLS_msn=5"), ll, "configured order, not request order");
        assert_ne!(key("origin", "/live/a.m3u8?_HLS_msn=5&_HLS_part=2"), ll);
        assert_ne!(key("origin", "/live/a.m3u8?_HLS_msn=5"), ll);
        assert_ne!(key("origin", "/live/a.m3u8?_HLS_msn=5&_HLS_msn=6"), key("origin", "/live/a.m3u8?_HLS_msn=5"));
    }

    #[test]
    fn parts_are_framed_unambiguously() {
        // Moving bytes between parts never yields the same key.
        assert_ne!(key("ab", "/c"), key("a", "b/c"));
        assert_ne!(key("o", "/a?_HLS_msn=1"), key("o", "/a?_HLS_msn1="));
        assert_ne!(key("o", "/a?_HLS_msn=1&_HLS_part=2"), key("o", "/a?_HLS_msn=1%26_HLS_part%3D2"));
        let f = frame(&KeyParts { pool: "h", target: b"/p?_HLS_skip=YES" }, &params());
        assert_eq!(
            f,
            [&b"\0\0\0\x11stile-cache-key/1\0\0\0\x01h\0\0\0\x02/p\0\0\0\x09_HLS_skip\0\0\0\x03YES"[..]].concat()
        );
    }

    #[test]
    fn ll_hls_requests_are_recognised() {
        assert!(is_ll_hls_request(b"/live/a.m3u8?_HLS_msn=5"));
        assert!(!is_ll_hls_request(b"/live/a.m3u8?x_HLS_msn=5"));
        assert_eq!(path_of(b"/a/b?c"), b"/a/b");
    }
}
