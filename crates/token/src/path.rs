//! Path canonicalisation: the one function that turns a request path into the
//! form that scopes are minted for and checked against.
//!
//! Security rests on this: what the edge admits must be exactly the object the
//! origin serves. So the canonical form is the percent-encoded path the edge
//! sends upstream, and anything ambiguous — a form that some origin might
//! resolve differently from us — is rejected rather than guessed.
//!
//! Rules (normative text: `docs/token-format.md` § 5):
//! - input is the path only (the caller splits off `?query` first), at most
//!   [`MAX_PATH_LEN`] bytes, starting with `/`;
//! - raw bytes allowed as they are: `A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , = : @ /`;
//! - raw `" [ ] ^ { | }` are accepted and percent-encoded;
//! - raw space, control bytes, bytes ≥ 0x80, `\`, `;`, `#`, `?`, `<`, `>` and the
//!   backtick are rejected (HTTP parsers refuse or re-encode them before we could judge);
//! - `%HH` (either hex case) decodes; a decoded character from the raw-allowed
//!   set is written raw (`%41` → `A`, `%2E` → `.`); `/`, `\`, `%`, `;` and
//!   controls are rejected (`%2F`, `%5C`, `%25` — so double encoding such as
//!   `%252e` —, `%3B`, `%00`, `%7F`…); other ASCII is written as `%HH` upper case;
//! - escapes ≥ `%80` must form strict UTF-8 and are written as `%HH` upper case;
//!   the code point must not be a C1 control, unassigned, private-use, or change
//!   under NFKC (fullwidth and small forms, `‥`, `；`…: servers that normalise
//!   would see a separator, a dot or a different name) — [`crate::unicode_table`];
//! - after that, no empty segment (`//`); and in each segment, the part before
//!   the first `%3F` or `%23` may not be `.` or `..` nor end with `.` or `%20`
//!   (`...`, `..%20`, `..%3F`: servers that trim trailing dots and spaces, or
//!   decode `?`/`#`, would see `..`); a single trailing `/` is allowed.
//!
//! Paths are case-sensitive: `/VOD/a.ts` and `/vod/a.ts` are different objects.

use std::borrow::Cow;

/// The longest request path accepted, in bytes, before and after canonicalisation.
pub const MAX_PATH_LEN: usize = 2048;

/// Why a path was rejected. Every variant maps to the `malformed` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty, or not starting with `/`.
    NotAbsolute,
    /// Longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An escape of `/`, `\`, `%`, `;` or a control character.
    ForbiddenEscape,
    /// Percent-encoded bytes that are not strict UTF-8, or a forbidden code point.
    InvalidUtf8,
    /// A raw byte that may not appear in a path.
    ForbiddenByte,
    /// An empty segment (`//`).
    EmptySegment,
    /// A `.` or `..` segment (also before an encoded `?` or `#`: `..%3F`).
    DotSegment,
    /// A segment ending in a dot or a space (`...`, `..%20`, `a.`), which some
    /// servers trim.
    TrailingDotOrSpace,
    /// A percent-encoded code point that is a C1 control, unassigned,
    /// private-use, or not NFKC-stable.
    ForbiddenCodePoint,
}

impl PathError {
    /// A short, stable description for diagnostics.
    pub const fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path does not start with /",
            PathError::TooLong => "path too long",
            PathError::BadEscape => "bad percent-escape",
            PathError::ForbiddenEscape => "encoded separator, percent or control character",
            PathError::InvalidUtf8 => "encoded bytes are not strict UTF-8",
            PathError::ForbiddenByte => "forbidden raw byte",
            PathError::EmptySegment => "empty path segment",
            PathError::DotSegment => "dot segment",
            PathError::TrailingDotOrSpace => "segment ends with a dot or a space",
            PathError::ForbiddenCodePoint => "encoded code point is unassigned, a control or changes under NFKC",
        }
    }
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// Canonicalises a request path. Borrows (no allocation) when the input has
/// no percent-escape and nothing to encode, which is the case for the paths
/// players normally send; otherwise returns a new string.
pub fn canonicalize_path(raw: &[u8]) -> Result<Cow<'_, str>, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    // Fast path: one pass that classifies every byte and checks the segments.
    // Any byte that is not raw-kept sends the path to the slow path.
    let mut seg_start = 1;
    let mut i = 1;
    while i < raw.len() {
        let b = raw[i];
        if !RAW_KEPT[usize::from(b)] {
            if class(b) == Class::Reject {
                return Err(PathError::ForbiddenByte);
            }
            return canonicalize_owned(raw);
        }
        if b == b'/' {
            check_segment(&raw[seg_start..i], false)?;
            seg_start = i + 1;
        }
        i += 1;
    }
    check_segment(&raw[seg_start..], true)?;
    // Every byte is ASCII from the raw-kept set.
    match core::str::from_utf8(raw) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => Err(PathError::ForbiddenByte),
    }
}

fn canonicalize_owned(raw: &[u8]) -> Result<Cow<'_, str>, PathError> {
    let out = canonicalize_slow(raw)?;
    check_segments(out.as_bytes())?;
    Ok(Cow::Owned(out))
}

/// Whether `path` is already in canonical form (canonicalising it is the identity).
pub fn is_canonical(path: &str) -> bool {
    canonicalize_path(path.as_bytes()).is_ok_and(|c| c == path)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed raw, written as is.
    Raw,
    /// Printable ASCII that is accepted but written percent-encoded.
    Encode,
    /// `%`: an escape follows.
    Percent,
    /// Never allowed raw.
    Reject,
}

/// `class(b) == Class::Raw`, as a table for the fast path.
const RAW_KEPT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = matches!(class(i as u8), Class::Raw);
        i += 1;
    }
    t
};

/// Checks one segment: never `.` or `..`, and empty only as the last one
/// (a single trailing slash, or the root path).
fn check_segment(seg: &[u8], last: bool) -> Result<(), PathError> {
    match seg {
        b"" if last => Ok(()),
        b"" => Err(PathError::EmptySegment),
        b"." | b".." => Err(PathError::DotSegment),
        [.., b'.'] => Err(PathError::TrailingDotOrSpace),
        _ => Ok(()),
    }
}

const fn class(b: u8) -> Class {
    match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => Class::Raw,
        b'-' | b'.' | b'_' | b'~' => Class::Raw,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' => Class::Raw,
        b':' | b'@' | b'/' => Class::Raw,
        b'"' | b'[' | b']' | b'^' | b'{' | b'|' | b'}' => Class::Encode,
        b'%' => Class::Percent,
        _ => Class::Reject,
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_escape(raw: &[u8], i: usize) -> Result<u8, PathError> {
    match (raw.get(i + 1).copied().and_then(hex_val), raw.get(i + 2).copied().and_then(hex_val)) {
        (Some(h), Some(l)) => Ok(h << 4 | l),
        _ => Err(PathError::BadEscape),
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX_UPPER[usize::from(b >> 4)] as char);
    out.push(HEX_UPPER[usize::from(b & 0x0f)] as char);
}

/// Whether a decoded non-ASCII code point may appear in a canonical path.
fn allowed_code_point(c: char) -> bool {
    let cp = u32::from(c);
    let table = crate::unicode_table::REJECTED;
    // The last range starting at or below `cp`.
    let i = table.partition_point(|&(start, _)| start <= cp);
    i == 0 || table[i - 1].1 < cp
}

fn canonicalize_slow(raw: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len() + raw.len() / 2);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match class(b) {
            Class::Raw => {
                out.push(b as char);
                i += 1;
            }
            Class::Encode => {
                push_escaped(&mut out, b);
                i += 1;
            }
            Class::Reject => return Err(PathError::ForbiddenByte),
            Class::Percent => {
                let d = decode_escape(raw, i)?;
                if d < 0x80 {
                    match class(d) {
                        _ if d == b'/' || d == b'%' => return Err(PathError::ForbiddenEscape),
                        Class::Raw => out.push(d as char),
                        Class::Encode => push_escaped(&mut out, d),
                        // `\`, `;`, controls.
                        Class::Reject if d == b'\\' || d == b';' || d < 0x20 || d == 0x7f => {
                            return Err(PathError::ForbiddenEscape);
                        }
                        // Space, `#`, `?`, `<`, `>`, backtick: printable, but never raw.
                        Class::Reject => push_escaped(&mut out, d),
                        Class::Percent => return Err(PathError::ForbiddenEscape),
                    }
                    i += 3;
                } else {
                    i = decode_utf8_run(raw, i, d, &mut out)?;
                }
            }
        }
        if out.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
    }
    Ok(out)
}

/// Decodes one UTF-8 character spelled as consecutive escapes starting at `i`
/// (whose first byte `lead` is already decoded), validates it strictly and
/// writes it back upper-case encoded. Returns the index after it.
fn decode_utf8_run(raw: &[u8], i: usize, lead: u8, out: &mut String) -> Result<usize, PathError> {
    let len = match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        // Continuation bytes without a lead, overlong leads C0/C1, F5..FF.
        _ => return Err(PathError::InvalidUtf8),
    };
    let mut buf = [0u8; 4];
    buf[0] = lead;
    for (k, slot) in buf.iter_mut().enumerate().take(len).skip(1) {
        let at = i + 3 * k;
        if raw.get(at) != Some(&b'%') {
            return Err(PathError::InvalidUtf8);
        }
        *slot = decode_escape(raw, at)?;
    }
    let s = core::str::from_utf8(&buf[..len]).map_err(|_| PathError::InvalidUtf8)?;
    let c = s.chars().next().ok_or(PathError::InvalidUtf8)?;
    if !allowed_code_point(c) {
        return Err(PathError::ForbiddenCodePoint);
    }
    for &b in &buf[..len] {
        push_escaped(out, b);
    }
    Ok(i + 3 * len)
}

fn check_segments(path: &[u8]) -> Result<(), PathError> {
    // path[0] == b'/'. Walk the segments after it.
    let body = &path[1..];
    if body.is_empty() {
        return Ok(());
    }
    let mut segments = body.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            check_segment(seg, last)?;
            continue;
        }
        let head = until_encoded_delimiter(seg);
        match head {
            b"." | b".." => return Err(PathError::DotSegment),
            _ if head.ends_with(b".") || head.ends_with(b"%20") => return Err(PathError::TrailingDotOrSpace),
            _ if seg.ends_with(b".") || seg.ends_with(b"%20") => return Err(PathError::TrailingDotOrSpace),
            _ => {}
        }
    }
    Ok(())
}

/// The part of a canonical segment before its first `%3F` or `%23`: what a
/// server that decodes them before splitting off the query or fragment sees.
fn until_encoded_delimiter(seg: &[u8]) -> &[u8] {
    let cut = seg.windows(3).position(|w| w == b"%3F" || w == b"%23").unwrap_or(seg.len());
    &seg[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row: input, expected canonical output or the error.
    fn check(input: &str, expect: Result<&str, PathError>) {
        let got = canonicalize_path(input.as_bytes());
        let got = got.as_ref().map(|c| c.as_ref()).map_err(|e| *e);
        assert_eq!(got, expect, "input {input:?}");
        if let Ok(canon) = got {
            // Idempotent.
            assert_eq!(canonicalize_path(canon.as_bytes()).as_deref(), Ok(canon), "not idempotent: {input:?}");
            // Plain canonical paths borrow (no allocation on the hot path).
            if !canon.contains('%') {
                assert!(matches!(canonicalize_path(canon.as_bytes()), Ok(Cow::Borrowed(_))));
            }
        }
    }

    use PathError::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        for p in [
            "/",
            "/vod/abc/master.m3u8",
            "/vod/abc/",
            "/vod/abc/720p/seg_00001.ts",
            "/live/ch-1/a~b_c.d/x.m4s",
            "/a/!$&'()*+,=:@/x",
            "/vod/..a/x.ts",
            "/vod/a.b/x.ts",
            "/vod/.hidden",
        ] {
            check(p, Ok(p));
        }
    }

    #[test]
    fn percent_encoding_normalises() {
        check("/vod/%61bc/x.ts", Ok("/vod/abc/x.ts"));
        check("/vod/%7e/x", Ok("/vod/~/x"));
        check("/vod/a%2Ets", Ok("/vod/a.ts"));
        check("/vod/a%20b.ts", Ok("/vod/a%20b.ts"));
        check("/vod/a%3fb", Ok("/vod/a%3Fb"));
        check("/vod/a%23b", Ok("/vod/a%23b"));
        check("/vod/a|b", Ok("/vod/a%7Cb"));
        check("/vod/%7C", Ok("/vod/%7C"));
        check("/vod/caf%c3%a9/x.ts", Ok("/vod/caf%C3%A9/x.ts"));
        check("/vod/%F0%9F%8E%AC.ts", Ok("/vod/%F0%9F%8E%AC.ts"));
        check("/vod/%21", Ok("/vod/!"));
        // Printable ASCII that is never raw in a canonical path stays encoded.
        check("/vod/%3c%3E%60%22", Ok("/vod/%3C%3E%60%22"));
        check("/vod/a\"b", Ok("/vod/a%22b"));
        check("/vod/%3Fx/%23y", Ok("/vod/%3Fx/%23y"));
    }

    #[test]
    fn trailing_dots_and_spaces_are_rejected() {
        for p in ["/vod/.../x", "/vod/a./x", "/vod/a.", "/vod/..%20/x", "/vod/%20/x", "/vod/a%20", "/vod/.%20./x"] {
            check(p, Err(TrailingDotOrSpace));
        }
        // Before an encoded `?` or `#`, which a decoding origin would cut at.
        for p in ["/vod/..%3F/x", "/vod/..%3f/x", "/vod/..%23/x", "/vod/.%3Fx"] {
            check(p, Err(DotSegment));
        }
        for p in ["/vod/a.%3Fx", "/vod/x%3Fa%20", "/vod/a%20%23"] {
            check(p, Err(TrailingDotOrSpace));
        }
        check("/vod/%3Fa/x", Ok("/vod/%3Fa/x"));
        check("/vod/a%3F..b", Ok("/vod/a%3F..b"));
        check("/vod/%20a", Ok("/vod/%20a"));
    }

    #[test]
    fn code_points_that_change_under_nfkc_are_rejected() {
        for p in [
            "/vod/a/%E2%80%A5/%E2%80%A5/b/seg.ts", // two dot leader: `..`
            "/vod/a/%EF%B8%B0/x",                  // presentation form for vertical two dot leader
            "/vod/a/..%CD%BE/x",                   // Greek question mark: `;` even under NFC
            "/vod/a%EF%BC%85",                     // fullwidth percent
            "/vod/a%EF%BC%9Bb",                    // fullwidth semicolon
            "/vod/a%EF%BC%9Fb",                    // fullwidth question mark
            "/vod/a%EF%BC%83b",                    // fullwidth number sign
            "/vod/a%E2%81%84b",                    // fraction slash
            "/vod/%EF%AC%81le",                    // the `fi` ligature
            "/vod/%C2%A0",                         // no-break space
            "/vod/%CD%B8",                         // unassigned U+0378
            "/vod/%EE%80%80",                      // private use U+E000
            "/vod/%F3%B0%80%80",                   // private use plane 15
        ] {
            check(p, Err(ForbiddenCodePoint));
        }
        check("/vod/%C3%A9%E5%AD%97%F0%9F%8E%AC", Ok("/vod/%C3%A9%E5%AD%97%F0%9F%8E%AC"));
        check("/vod/e%CC%81", Ok("/vod/e%CC%81"));
    }

    #[test]
    fn encoded_separators_and_controls_are_rejected() {
        for p in [
            "/vod/abc%2fx.ts",
            "/vod/abc%2Fx.ts",
            "/vod/abc%5cx.ts",
            "/vod/abc%5Cx.ts",
            "/vod/abc%00.ts",
            "/vod/abc%0a.ts",
            "/vod/abc%7f.ts",
            "/vod/abc%3b.ts",
            "/vod/%25",
        ] {
            check(p, Err(ForbiddenEscape));
        }
    }

    #[test]
    fn double_encoding_is_rejected() {
        check("/vod/%252e%252e/secret", Err(ForbiddenEscape));
        check("/vod/%252f", Err(ForbiddenEscape));
        check("/vod/%25%32%65", Err(ForbiddenEscape));
    }

    #[test]
    fn dot_segments_are_rejected_in_any_spelling() {
        for p in [
            "/vod/../secret",
            "/vod/./x.ts",
            "/vod/abc/..",
            "/vod/abc/.",
            "/..",
            "/vod/%2e%2e/secret",
            "/vod/%2E%2E/secret",
            "/vod/.%2e/secret",
            "/vod/%2e/x",
        ] {
            check(p, Err(DotSegment));
        }
    }

    #[test]
    fn empty_segments_are_rejected() {
        check("//vod/x", Err(EmptySegment));
        check("/vod//x", Err(EmptySegment));
        check("/vod/x//", Err(EmptySegment));
    }

    #[test]
    fn forbidden_raw_bytes() {
        for p in [
            "/vod/a;jsessionid=1/x.ts",
            "/vod/a\\..\\x",
            "/vod/a b",
            "/vod/a\tb",
            "/vod/a\0b",
            "/vod/a#b",
            "/vod/a?b",
            "/vod/caf\u{e9}",
            "/vod/a<b",
            "/vod/a>b",
            "/vod/a`b",
            "/vod/a\x7fb",
        ] {
            check(p, Err(ForbiddenByte));
        }
        assert_eq!(canonicalize_path(b"/vod/\xff\xfe"), Err(ForbiddenByte));
    }

    #[test]
    fn bad_escapes() {
        for p in ["/vod/%", "/vod/%2", "/vod/%zz", "/vod/%g0", "/vod/%-1"] {
            check(p, Err(BadEscape));
        }
    }

    #[test]
    fn overlong_and_invalid_utf8_are_rejected() {
        for p in [
            "/vod/%c0%af",         // overlong '/'
            "/vod/%c0%ae%c0%ae/x", // overlong '.'
            "/vod/%e0%80%af",      // 3-byte overlong '/'
            "/vod/%f0%80%80%af",   // 4-byte overlong '/'
            "/vod/%c3",            // truncated
            "/vod/%c3x",           // truncated
            "/vod/%80",            // lone continuation
            "/vod/%ed%a0%80",      // surrogate
            "/vod/%f4%90%80%80",   // > U+10FFFF
            "/vod/%ff",            // never valid
        ] {
            check(p, Err(InvalidUtf8));
        }
        for p in [
            "/vod/%c2%85",               // C1 control (NEL)
            "/vod/a%ef%bc%8fb",          // fullwidth solidus
            "/vod/%ef%bc%8e%ef%bc%8e/x", // fullwidth dots
            "/vod/a%e2%88%95b",          // division slash
        ] {
            check(p, Err(ForbiddenCodePoint));
        }
    }

    #[test]
    fn must_be_absolute_and_bounded() {
        check("", Err(NotAbsolute));
        check("vod/x", Err(NotAbsolute));
        check("%2fvod", Err(NotAbsolute));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        check(&long, Err(TooLong));
        let ok = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        check(&ok, Ok(&ok));
        // Encoding can grow a path past the limit.
        let grows = format!("/{}", "|".repeat(MAX_PATH_LEN / 2));
        check(&grows, Err(TooLong));
        let grows = format!("/{}", "{".repeat(MAX_PATH_LEN / 2));
        check(&grows, Err(TooLong));
    }

    #[test]
    fn case_is_significant_but_hex_case_is_not() {
        check("/VOD/A.ts", Ok("/VOD/A.ts"));
        check("/vod/%c3%A9", Ok("/vod/%C3%A9"));
        check("/vod/%C3%a9", Ok("/vod/%C3%A9"));
    }

    #[test]
    fn is_canonical_agrees() {
        assert!(is_canonical("/vod/a.ts"));
        assert!(is_canonical("/vod/caf%C3%A9"));
        assert!(!is_canonical("/vod/caf%c3%a9"));
        assert!(!is_canonical("/vod/../x"));
    }
}
