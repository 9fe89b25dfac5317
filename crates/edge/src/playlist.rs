//! HLS playlist rewriting: when a playlist was admitted with a query-string
//! token, every child URI gets the token too, so players that resolve relative
//! URIs without the parent's query keep working.
//!
//! Rewritten: URI lines, and the `URI="..."` attribute of `EXT-X-KEY`,
//! `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`,
//! `EXT-X-PART`, `EXT-X-PRELOAD-HINT` and `EXT-X-RENDITION-REPORT`. Left alone:
//! every other line, URIs with another scheme than http(s) (`skd://`, `data:`),
//! absolute or scheme-relative URIs naming another host than the request's (the
//! token never leaves for another host), and URIs that already carry the
//! parameter. Line endings (LF or CRLF) are preserved.
//!
//! The function is pure and bounded: the caller enforces the size limit.

/// Tags whose `URI` attribute names a child resource.
const URI_TAGS: [&[u8]; 8] = [
    b"#EXT-X-KEY:",
    b"#EXT-X-SESSION-KEY:",
    b"#EXT-X-MAP:",
    b"#EXT-X-MEDIA:",
    b"#EXT-X-I-FRAME-STREAM-INF:",
    b"#EXT-X-PART:",
    b"#EXT-X-PRELOAD-HINT:",
    b"#EXT-X-RENDITION-REPORT:",
];

/// Appends `param=token` to every child URI of `playlist` that stays on `host`
/// (the request's `Host`, compared case-insensitively; `None` rewrites relative URIs only).
pub fn rewrite(playlist: &[u8], param: &str, token: &str, host: Option<&str>) -> Vec<u8> {
    let extra = param.len() + token.len() + 2;
    let mut out = Vec::with_capacity(playlist.len() + playlist.len() / 16 * extra / 4 + extra);
    let rw = Rewriter { param: param.as_bytes(), token: token.as_bytes(), host: host.map(str::as_bytes) };
    for raw_line in playlist.split_inclusive(|&b| b == b'\n') {
        let (line, eol) = split_eol(raw_line);
        if line.is_empty() {
        } else if line[0] == b'#' {
            match URI_TAGS.iter().find(|t| starts_with_ignore_case(line, t)) {
                Some(_) => rw.tag(line, &mut out),
                None => out.extend_from_slice(line),
            }
        } else {
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                out.extend_from_slice(line);
            } else {
                let lead = line.len() - line.trim_ascii_start().len();
                out.extend_from_slice(&line[..lead]);
                rw.uri(trimmed, &mut out);
                out.extend_from_slice(&line[lead + trimmed.len()..]);
            }
        }
        out.extend_from_slice(eol);
    }
    out
}

/// Appends `param=token` to URIs that stay on `host`; shared with the DASH rewriter ([`crate::mpd`]).
pub(crate) struct Rewriter<'a> {
    pub(crate) param: &'a [u8],
    pub(crate) token: &'a [u8],
    pub(crate) host: Option<&'a [u8]>,
}

impl Rewriter<'_> {
    /// A tag line: rewrite the value of its `URI="..."` attribute, if any.
    fn tag(&self, line: &[u8], out: &mut Vec<u8>) {
        let Some(start) = find_uri_attr(line) else {
            out.extend_from_slice(line);
            return;
        };
        let value_start = start + b"URI=\"".len();
        let Some(len) = line[value_start..].iter().position(|&b| b == b'"') else {
            out.extend_from_slice(line);
            return;
        };
        out.extend_from_slice(&line[..value_start]);
        self.uri(&line[value_start..value_start + len], out);
        out.extend_from_slice(&line[value_start + len..]);
    }

    /// One URI: append the token when it stays on our host and lacks it.
    pub(crate) fn uri(&self, uri: &[u8], out: &mut Vec<u8>) {
        if !self.stays_here(uri) || self.has_param(uri) {
            out.extend_from_slice(uri);
            return;
        }
        let (body, fragment) = match uri.iter().position(|&b| b == b'#') {
            Some(i) => uri.split_at(i),
            None => (uri, &[][..]),
        };
        out.extend_from_slice(body);
        match body.iter().position(|&b| b == b'?') {
            None => out.push(b'?'),
            // An empty query, or one ending in `&`: nothing to add before the parameter.
            Some(q) if q + 1 == body.len() || body.last() == Some(&b'&') => {}
            Some(_) => out.push(b'&'),
        }
        out.extend_from_slice(self.param);
        out.push(b'=');
        out.extend_from_slice(self.token);
        out.extend_from_slice(fragment);
    }

    /// Relative, or absolute (or scheme-relative) http(s) naming our host.
    pub(crate) fn stays_here(&self, uri: &[u8]) -> bool {
        let authority = if let Some(rest) = uri.strip_prefix(b"//") {
            rest
        } else if let Some(colon) = scheme_end(uri) {
            let scheme = &uri[..colon];
            if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
                return false;
            }
            match uri[colon + 1..].strip_prefix(b"//") {
                Some(rest) => rest,
                None => return false,
            }
        } else {
            return true; // relative
        };
        let end = authority.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(authority.len());
        self.host.is_some_and(|h| authority[..end].eq_ignore_ascii_case(h))
    }

    pub(crate) fn has_param(&self, uri: &[u8]) -> bool {
        let Some(q) = uri.iter().position(|&b| b == b'?') else { return false };
        let query = &uri[q + 1..];
        let query = &query[..query.iter().position(|&b| b == b'#').unwrap_or(query.len())];
        query.split(|&b| b == b'&').any(|p| p.split(|&b| b == b'=').next() == Some(self.param))
    }
}

/// The position of `:` ending a URI scheme (`ALPHA *( ALPHA / DIGIT / + / - / . )`), if any.
pub(crate) fn scheme_end(uri: &[u8]) -> Option<usize> {
    let colon = uri.iter().position(|&b| matches!(b, b':' | b'/' | b'?' | b'#'))?;
    (uri[colon] == b':'
        && colon > 0
        && uri[0].is_ascii_alphabetic()
        && uri[..colon].iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then_some(colon)
}

/// Start of a `URI="` attribute at an attribute boundary (after `:` or `,`).
fn find_uri_attr(line: &[u8]) -> Option<usize> {
    let pat = b"URI=\"";
    let mut in_quotes = false;
    for i in 0..line.len() {
        match line[i] {
            b'"' => in_quotes = !in_quotes,
            b':' | b',' if !in_quotes && line[i + 1..].starts_with(pat) => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn split_eol(line: &[u8]) -> (&[u8], &[u8]) {
    let mut n = line.len();
    if line[..n].ends_with(b"\n") {
        n -= 1;
    }
    if line[..n].ends_with(b"\r") {
        n -= 1;
    }
    line.split_at(n)
}

fn starts_with_ignore_case(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The path of an absolute URI (`http(s)://host/path`, `//host/path`) or of an
/// absolute-path reference (`/path`); `None` for a relative reference.
pub(crate) fn uri_path(uri: &str) -> Option<&str> {
    fn after_authority(rest: &str) -> &str {
        rest.find('/').map_or("/", |i| &rest[i..])
    }
    if let Some(rest) = uri.strip_prefix("//") {
        return Some(after_authority(rest));
    }
    for scheme in ["http://", "https://"] {
        // Compared as bytes: the URI may hold non-ASCII text where a scheme would end.
        if uri.as_bytes().get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme.as_bytes())) {
            return Some(after_authority(&uri[scheme.len()..]));
        }
    }
    uri.starts_with('/').then_some(uri)
}

/// RFC 3986 § 5.2.4 on an absolute path: `.` segments dropped, `..` removes the one before.
pub(crate) fn remove_dot_segments(path: &str, out: &mut String) {
    out.clear();
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                let cut = out.rfind('/').unwrap_or(0);
                out.truncate(cut);
            }
            _ => {
                out.push('/');
                out.push_str(seg);
                continue;
            }
        }
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: &str) {
        let got = rewrite(input.as_bytes(), "st", "TOK", Some("edge.example"));
        assert_eq!(String::from_utf8(got).unwrap(), expect, "input: {input:?}");
    }

    #[test]
    fn table() {
        for (input, expect) in [
            ("", ""),
            ("#EXTM3U\n", "#EXTM3U\n"),
            ("seg1.ts\n", "seg1.ts?st=TOK\n"),
            ("seg1.ts", "seg1.ts?st=TOK"),
            ("seg1.ts\r\n", "seg1.ts?st=TOK\r\n"),
            ("  seg1.ts  \n", "  seg1.ts?st=TOK  \n"),
            ("seg1.ts?a=1\n", "seg1.ts?a=1&st=TOK\n"),
            ("seg1.ts?\n", "seg1.ts?st=TOK\n"),
            ("seg1.ts?a=1&\n", "seg1.ts?a=1&st=TOK\n"),
            ("seg1.ts?a?\n", "seg1.ts?a?&st=TOK\n"),
            ("seg1.ts#frag\n", "seg1.ts?st=TOK#frag\n"),
            ("seg1.ts?st=OLD\n", "seg1.ts?st=OLD\n"),
            ("seg1.ts?xst=1\n", "seg1.ts?xst=1&st=TOK\n"),
            ("/abs/path/seg.ts\n", "/abs/path/seg.ts?st=TOK\n"),
            ("../up/seg.ts\n", "../up/seg.ts?st=TOK\n"),
            ("https://edge.example/v/seg.ts\n", "https://edge.example/v/seg.ts?st=TOK\n"),
            ("HTTP://EDGE.example/v/seg.ts\n", "HTTP://EDGE.example/v/seg.ts?st=TOK\n"),
            ("//edge.example/v/seg.ts\n", "//edge.example/v/seg.ts?st=TOK\n"),
            ("https://cdn.other/v/seg.ts\n", "https://cdn.other/v/seg.ts\n"),
            ("https://edge.example.evil/v/seg.ts\n", "https://edge.example.evil/v/seg.ts\n"),
            ("https://edge.example:8443/v/seg.ts\n", "https://edge.example:8443/v/seg.ts\n"),
            ("//cdn.other/v/seg.ts\n", "//cdn.other/v/seg.ts\n"),
            ("data:text/plain,x\n", "data:text/plain,x\n"),
            ("#EXTINF:1.0,\nseg.ts\n", "#EXTINF:1.0,\nseg.ts?st=TOK\n"),
            (
                "#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\nv1/index.m3u8\n",
                "#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a,b\"\nv1/index.m3u8?st=TOK\n",
            ),
            (
                "#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x1\n",
                "#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin?st=TOK\",IV=0x1\n",
            ),
            ("#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key\"\n", "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key\"\n"),
            ("#EXT-X-KEY:METHOD=NONE\n", "#EXT-X-KEY:METHOD=NONE\n"),
            ("#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"k\"\n", "#EXT-X-SESSION-KEY:METHOD=AES-128,URI=\"k?st=TOK\"\n"),
            (
                "#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"1@0\"\n",
                "#EXT-X-MAP:URI=\"init.mp4?st=TOK\",BYTERANGE=\"1@0\"\n",
            ),
            (
                "#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"b,URI=\",URI=\"a/i.m3u8\"\n",
                "#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"b,URI=\",URI=\"a/i.m3u8?st=TOK\"\n",
            ),
            (
                "#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"en\",URI=\"a/i.m3u8\"\n",
                "#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"en\",URI=\"a/i.m3u8?st=TOK\"\n",
            ),
            ("#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,NAME=\"cc\"\n", "#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,NAME=\"cc\"\n"),
            (
                "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"if.m3u8\"\n",
                "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"if.m3u8?st=TOK\"\n",
            ),
            ("#EXT-X-PART:DURATION=0.5,URI=\"p1.mp4\"\n", "#EXT-X-PART:DURATION=0.5,URI=\"p1.mp4?st=TOK\"\n"),
            ("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.mp4\"\n", "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.mp4?st=TOK\"\n"),
            (
                "#EXT-X-RENDITION-REPORT:URI=\"../v2/i.m3u8\",LAST-MSN=1\n",
                "#EXT-X-RENDITION-REPORT:URI=\"../v2/i.m3u8?st=TOK\",LAST-MSN=1\n",
            ),
            ("#EXT-X-KEY:URI=\"https://keys.other/k\"\n", "#EXT-X-KEY:URI=\"https://keys.other/k\"\n"),
            ("#EXT-X-KEY:URI=\"unterminated\n", "#EXT-X-KEY:URI=\"unterminated\n"),
            ("# comment URI=\"x\"\n", "# comment URI=\"x\"\n"),
            ("\n\n", "\n\n"),
        ] {
            check(input, expect);
        }
    }

    #[test]
    fn without_a_host_only_relative_uris_are_rewritten() {
        let got = rewrite(b"a.ts\nhttps://h/b.ts\n", "st", "T", None);
        assert_eq!(got, b"a.ts?st=T\nhttps://h/b.ts\n");
    }

    #[test]
    fn odd_bytes_keep_their_lines() {
        // (input, output): lines without a URI come back byte for byte; a URI gets the token.
        for (input, expect) in [
            (&b"\xff\xfe\r"[..], &b"\xff\xfe?st=T\r"[..]),
            (b"#EXT-X-KEY:", b"#EXT-X-KEY:"),
            (b"#EXT-X-KEY:,URI=\"", b"#EXT-X-KEY:,URI=\""),
            (b"\r\r\n", b"\r\r\n"),
            (b"#EXT-X-MAP:URI=\"a\"\"b\"", b"#EXT-X-MAP:URI=\"a?st=T\"\"b\""),
            (b"#\xff\n\n#EXT-X-KEY:METHOD=NONE\r\n", b"#\xff\n\n#EXT-X-KEY:METHOD=NONE\r\n"),
        ] {
            let got = rewrite(input, "st", "T", Some("h"));
            let lines = |b: &[u8]| b.split(|&c| c == b'\n').count();
            assert_eq!(lines(&got), lines(input), "line count of {input:?}");
            assert_eq!(got, expect, "{input:?} gave {:?}", String::from_utf8_lossy(&got));
        }
    }
}
