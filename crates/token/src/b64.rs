//! Strict, allocation-free base64url (RFC 4648 §5) without padding.
//!
//! Strict means every byte string has exactly one accepted spelling: no `=`,
//! no other alphabet, and the unused low bits of the last character must be
//! zero. Without that, two different token strings could carry the same bytes.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const INVALID: u8 = 0xff;

const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// `DECODE` pre-shifted for each position of a 4-character group, with bit 31
/// set for invalid characters, so a group decodes with four loads and three
/// ORs and errors are checked once, after the loop.
const fn shifted(shift: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if DECODE[i] == INVALID { 1 << 31 } else { (DECODE[i] as u32) << shift };
        i += 1;
    }
    t
}
const D0: [u32; 256] = shifted(18);
const D1: [u32; 256] = shifted(12);
const D2: [u32; 256] = shifted(6);
const D3: [u32; 256] = shifted(0);

/// Encoded length of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Appends the encoding of `input` to `out`.
pub(crate) fn encode_into(input: &[u8], out: &mut String) {
    out.reserve(encoded_len(input.len()));
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let v = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(ALPHABET[(v >> shift & 63) as usize] as char);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let v = u32::from(a) << 16;
            out.push(ALPHABET[(v >> 18 & 63) as usize] as char);
            out.push(ALPHABET[(v >> 12 & 63) as usize] as char);
        }
        [a, b] => {
            let v = u32::from(a) << 16 | u32::from(b) << 8;
            for shift in [18, 12, 6] {
                out.push(ALPHABET[(v >> shift & 63) as usize] as char);
            }
        }
        _ => {}
    }
}

/// Decodes `input` into `out`, returning the decoded length, or `None` when
/// the input is not strict base64url or does not fit.
pub(crate) fn decode_into(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let rem = input.len() % 4;
    if rem == 1 {
        return None;
    }
    let n = input.len() / 4 * 3 + rem.saturating_sub(1);
    if n > out.len() {
        return None;
    }
    let whole = input.len() / 4 * 3;
    let mut chunks = input.chunks_exact(4);
    let mut err = 0u32;
    for (c, o) in (&mut chunks).zip(out[..whole].chunks_exact_mut(3)) {
        let v = D0[c[0] as usize] | D1[c[1] as usize] | D2[c[2] as usize] | D3[c[3] as usize];
        err |= v;
        o.copy_from_slice(&v.to_be_bytes()[1..]);
    }
    if err & 1 << 31 != 0 {
        return None;
    }
    let o = whole;
    match *chunks.remainder() {
        [a, b] => {
            let (a, b) = (DECODE[a as usize], DECODE[b as usize]);
            if (a | b) & 0xc0 != 0 || b & 0x0f != 0 {
                return None;
            }
            out[o] = a << 2 | b >> 4;
        }
        [a, b, c] => {
            let (a, b, c) = (DECODE[a as usize], DECODE[b as usize], DECODE[c as usize]);
            if (a | b | c) & 0xc0 != 0 || c & 0x03 != 0 {
                return None;
            }
            out[o] = a << 2 | b >> 4;
            out[o + 1] = b << 4 | c >> 2;
        }
        _ => {}
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut s = String::new();
        encode_into(b, &mut s);
        s
    }

    fn dec(s: &str) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        decode_into(s.as_bytes(), &mut buf).map(|n| buf[..n].to_vec())
    }

    #[test]
    fn rfc4648_vectors_without_padding() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(enc(plain.as_bytes()), coded);
            assert_eq!(dec(coded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(enc(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn strictness() {
        assert_eq!(dec("Zg=="), None, "padding");
        assert_eq!(dec("Zh"), None, "non-zero trailing bits");
        assert_eq!(dec("Zm9"), None, "non-zero trailing bits");
        assert_eq!(dec("Z"), None, "impossible length");
        assert_eq!(dec("Zm9+"), None, "standard alphabet");
        assert_eq!(dec("Zm9/"), None, "standard alphabet");
        assert_eq!(dec("Zm 9"), None);
    }

    #[test]
    fn round_trip_all_lengths() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..48 {
            assert_eq!(dec(&enc(&data[..n])).as_deref(), Some(&data[..n]));
        }
        let mut small = [0u8; 2];
        assert_eq!(decode_into(b"Zm9v", &mut small), None, "does not fit");
    }
}
