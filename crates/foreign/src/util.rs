//! Byte-level helpers shared by the formats: splitting request targets,
//! query strings and cookies, strict decoders (hex, base64 in the spellings
//! vendors use, decimal times), keyed MACs with constant-time checks, the
//! glob matcher for ACLs, and rebuilding the upstream target.
//!
//! Nothing here panics on any input; every loop is bounded by its input.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use stile_token::Reason;
use subtle::ConstantTimeEq;

/// The longest request target a format will look at; longer is `malformed`.
pub const MAX_TARGET_LEN: usize = 8192;

/// Splits `/path?query` into the path and the query (without `?`).
pub(crate) fn split_target(target: &[u8]) -> (&[u8], Option<&[u8]>) {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

/// One `name=value` pair of a query string, with its byte range in the query.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pair<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
    /// Offset of the pair's first byte in the query.
    pub(crate) start: usize,
    /// Offset one past the pair's last byte.
    pub(crate) end: usize,
}

/// The pairs of a query string, in order; empty pairs (`a&&b`) are skipped.
pub(crate) fn pairs(query: &[u8]) -> impl Iterator<Item = Pair<'_>> {
    let mut pos = 0usize;
    core::iter::from_fn(move || {
        while pos <= query.len() {
            let start = pos;
            let end = query[start..].iter().position(|&b| b == b'&').map_or(query.len(), |i| start + i);
            pos = end + 1;
            if end == start {
                continue;
            }
            let pair = &query[start..end];
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            return Some(Pair { name, value, start, end });
        }
        None
    })
}

/// The single value of query parameter `name`: `Ok(None)` when absent,
/// `malformed` when given twice (two components could pick different copies).
pub(crate) fn single_param<'a>(query: Option<&'a [u8]>, name: &[u8]) -> Result<Option<Pair<'a>>, Reason> {
    let mut found = None;
    for p in pairs(query.unwrap_or_default()) {
        if p.name == name {
            if found.is_some() {
                return Err(Reason::Malformed);
            }
            found = Some(p);
        }
    }
    Ok(found)
}

/// The first cookie called `name` in any of the `Cookie` header values
/// (browsers send the most specific path first).
pub(crate) fn find_cookie<'a>(headers: &[&'a [u8]], name: &[u8]) -> Option<&'a [u8]> {
    headers.iter().find_map(|h| {
        h.split(|&b| b == b';').map(<[u8]>::trim_ascii).find_map(|c| {
            let i = c.iter().position(|&b| b == b'=')?;
            (&c[..i] == name).then(|| &c[i + 1..])
        })
    })
}

/// The name of the first cookie called `name`, borrowed from the header.
pub(crate) fn cookie_name<'a>(headers: &[&'a [u8]], name: &[u8]) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        h.split(|&b| b == b';').map(<[u8]>::trim_ascii).find_map(|c| {
            let i = c.iter().position(|&b| b == b'=')?;
            (&c[..i] == name).then(|| core::str::from_utf8(&c[..i]).ok()).flatten()
        })
    })
}

/// A non-empty value as UTF-8, or `malformed`.
pub(crate) fn text(b: &[u8]) -> Result<&str, Reason> {
    if b.is_empty() {
        return Err(Reason::Malformed);
    }
    core::str::from_utf8(b).map_err(|_| Reason::Malformed)
}

/// A Unix time written as 1..=12 decimal digits, nothing else.
pub(crate) fn parse_time(b: &[u8]) -> Result<u64, Reason> {
    if b.is_empty() || b.len() > 12 || !b.iter().all(u8::is_ascii_digit) {
        return Err(Reason::Malformed);
    }
    Ok(b.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case) into `out`; the input must fill it exactly.
pub(crate) fn hex_exact(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != 2 * out.len() {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (hex_val(pair[0]), hex_val(pair[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

/// Decodes hex of any even length into a new vector (keys from configuration).
pub(crate) fn hex_vec(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0u8; s.len() / 2];
    hex_exact(s, &mut out).then_some(out)
}

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent);

/// base64url, padded or not (vendors write both), trailing bits must be zero.
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, INDIFFERENT);
/// Standard base64, padded or not.
pub(crate) const B64STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, INDIFFERENT);

/// Decodes base64url (padding optional) into `out`, returning the length.
pub(crate) fn b64url_into(s: &[u8], out: &mut [u8]) -> Option<usize> {
    // The decoder wants room for whole 3-byte groups.
    let mut buf = [0u8; 96];
    if s.len() > 128 {
        return None;
    }
    let n = B64URL.decode_slice(s, &mut buf).ok()?;
    let dst = out.get_mut(..n)?;
    dst.copy_from_slice(&buf[..n]);
    Some(n)
}

/// Decodes base64url (padding optional) of a length-bounded text field.
pub(crate) fn b64url_vec(s: &[u8], max: usize) -> Option<Vec<u8>> {
    if s.len() > max.div_ceil(3) * 4 + 2 {
        return None;
    }
    B64URL.decode(s).ok().filter(|v| v.len() <= max)
}

/// The hash functions vendors put under their HMACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hash {
    /// MD5 (Akamai only; weak, kept for tokens in the wild).
    Md5,
    /// SHA-1 (Akamai, Cloud CDN, Media CDN dual tokens).
    Sha1,
    /// SHA-256.
    Sha256,
}

impl Hash {
    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Hash::Md5 => 16,
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }

    /// The lower-case name used in configuration and diagnostics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Hash::Md5 => "md5",
            Hash::Sha1 => "sha1",
            Hash::Sha256 => "sha256",
        }
    }
}

/// Checks, in constant time, that `tag` is the HMAC of the concatenated
/// `parts` under `key`. `tag` must be the full digest.
pub(crate) fn hmac_ok(hash: Hash, key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else { return false };
        for p in parts {
            mac.update(p);
        }
        mac.verify_slice(tag).is_ok()
    }
    match hash {
        Hash::Md5 => run::<Hmac<md5::Md5>>(key, parts, tag),
        Hash::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts, tag),
        Hash::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts, tag),
    }
}

/// The HMAC of the concatenated `parts` (for signing in tests, benches and tools).
pub fn hmac(hash: Hash, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else { return Vec::new() };
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        Hash::Md5 => run::<Hmac<md5::Md5>>(key, parts),
        Hash::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Hash::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
    }
}

/// Constant-time equality of two byte strings of equal length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Glob match: `*` matches any run of bytes (slashes included, as the vendors
/// document), `?` exactly one byte, everything else itself. Linear-time
/// backtracking over the last `*`, so hostile patterns cannot blow up.
pub(crate) fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Percent-decodes `s` (`+` stays `+`); `None` on a bad escape.
pub(crate) fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let h = hex_val(*s.get(i + 1)?)?;
            let l = hex_val(*s.get(i + 2)?)?;
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The upstream target: the canonical path and the query without the pairs
/// `drop` selects (other pairs kept byte for byte, in order).
pub(crate) fn upstream(path: &str, query: Option<&[u8]>, drop: impl Fn(&[u8]) -> bool) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, <[u8]>::len) + 1);
    out.push_str(path);
    let mut first = true;
    for p in pairs(query.unwrap_or_default()) {
        if drop(p.name) {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        // The query came from a request line: bytes outside ASCII are kept as escapes.
        for &b in &query.unwrap_or_default()[p.start..p.end] {
            if b.is_ascii() {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
pub(crate) fn unmap(a: std::net::IpAddr) -> std::net::IpAddr {
    match a {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Canonicalises a raw path with Stile's canonicaliser; ambiguity is `malformed`.
pub(crate) fn canonical(raw: &[u8]) -> Result<String, Reason> {
    stile_token::canonicalize_path(raw).map(|c| c.into_owned()).map_err(|_| Reason::Malformed)
}

/// Bytes for `Display`: printable ASCII as is, the rest escaped.
pub(crate) fn printable(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_rows() {
        for (p, t, want) in [
            ("/vod/*", "/vod/a/b.ts", true),
            ("/vod/*", "/vodx/a", false),
            ("/*", "/", true),
            ("/a?c", "/abc", true),
            ("/a?c", "/ac", false),
            ("/a*b*c", "/axxbyyc", true),
            ("/a*b*c", "/axxbyy", false),
            ("*.m3u8", "/x/y.m3u8", true),
            ("/exact", "/exact", true),
            ("/exact", "/exact2", false),
            ("", "", true),
            ("**", "/x", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
        }
        // Hostile pattern stays fast (would be exponential with naive recursion).
        let p = "*a".repeat(40) + "b";
        let t = "a".repeat(4000);
        assert!(!glob(p.as_bytes(), t.as_bytes()));
    }

    #[test]
    fn query_pairs_and_duplicates() {
        let q = b"a=1&&b&c=x=y";
        let got: Vec<_> = pairs(q).map(|p| (p.name, p.value)).collect();
        assert_eq!(got, vec![(&b"a"[..], &b"1"[..]), (b"b", b""), (b"c", b"x=y")]);
        assert_eq!(single_param(Some(b"a=1&a=2"), b"a").unwrap_err(), Reason::Malformed);
        assert!(single_param(None, b"a").unwrap().is_none());
        assert_eq!(upstream("/p", Some(b"x=1&tok=2&y=%20"), |n| n == b"tok"), "/p?x=1&y=%20");
    }

    #[test]
    fn decoders() {
        assert_eq!(parse_time(b"1598024587"), Ok(1_598_024_587));
        for bad in [&b""[..], b"-1", b"1e9", b"0x10", b"1234567890123", b" 1"] {
            assert_eq!(parse_time(bad), Err(Reason::Malformed));
        }
        let mut o = [0u8; 2];
        assert!(hex_exact(b"aBcd", &mut o) && o == [0xab, 0xcd]);
        assert!(!hex_exact(b"abc", &mut o) && !hex_exact(b"zzzz", &mut o));
        let mut o = [0u8; 16];
        assert_eq!(b64url_into(b"nZtRohdNF9m3cKM24IcK4w==", &mut o), Some(16));
        assert_eq!(b64url_into(b"nZtRohdNF9m3cKM24IcK4w", &mut o), Some(16));
        assert_eq!(b64url_into(b"nZtRohdNF9m3cKM24IcK4x", &mut o), None, "non-zero trailing bits");
        assert_eq!(b64url_into(b"nZtRohdNF9m3cKM24IcK4w+=", &mut o), None);
        assert_eq!(percent_decode(b"a%2Fb%zz"), None);
        assert_eq!(percent_decode(b"a%2fb+c").unwrap(), b"a/b+c");
        assert_eq!(find_cookie(&[b"a=1; hdnts=X; b=2"], b"hdnts"), Some(&b"X"[..]));
    }
}
