//! The disk tier's file format: one file per object, its head then its body.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "STILEC01"
//!      8    16  key (Pingora's 128-bit hash of the framed cache key)
//!     24     8  seq (store sequence number: purges compare against it)
//!     32     8  created, Unix ms        40  8  updated, Unix ms
//!     48     8  fresh until, Unix ms    56  4  stale-while-revalidate s
//!     60     4  stale-if-error s        64  2  HTTP status
//!     66     2  path length P           68  4  headers length H
//!     72     8  body length B           80  4  CRC-32 of the head (bytes 0..80 and 84..end of head)
//!     84     P  canonical path (UTF-8)
//!   84+P     H  headers: u16 count, then per header u16 name length, name, u32 value length, value
//! 84+P+H  4*N  CRC-32 of each 64 KiB block of the body (N = ceil(B / 65536))
//!  head_end  B  body
//! ```
//!
//! All integers little-endian. Every length is bounded before anything is
//! allocated; the head is covered by its CRC and each body block by its own, so
//! a reader can seek into the body and still check every byte it serves. A
//! file that is short, long, or fails any check is refused, never served
//! ([`decode_file`] is fuzzed: `fuzz/fuzz_targets/cache_file.rs`).

use pingora::http::ResponseHeader;

/// File magic and format version.
pub(crate) const MAGIC: [u8; 8] = *b"STILEC01";
/// Body bytes covered by one CRC.
pub(crate) const BLOCK: usize = 64 << 10;
/// Length of the fixed part of the head.
pub(crate) const FIXED: usize = 84;
/// Longest path stored.
pub(crate) const MAX_PATH: usize = 8 << 10;
/// Longest headers block stored.
pub(crate) const MAX_HEADERS: usize = 64 << 10;
/// Largest body stored (`cache.max_object_bytes` is at most this).
pub(crate) const MAX_BODY: u64 = u32::MAX as u64;

/// Why bytes are not a valid cache file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the head or the body needs.
    #[error("truncated")]
    Truncated,
    /// More bytes than the head says.
    #[error("trailing bytes")]
    Trailing,
    /// Not our magic or version.
    #[error("bad magic")]
    Magic,
    /// A length over its bound.
    #[error("length out of bounds")]
    Bounds,
    /// A checksum mismatch.
    #[error("checksum mismatch")]
    Checksum,
    /// A header, path or status that cannot be rebuilt.
    #[error("invalid field")]
    Field,
}

/// An object's head, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) key: [u8; 16],
    pub(crate) seq: u64,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) swr: u32,
    pub(crate) sie: u32,
    pub(crate) status: u16,
    pub(crate) path: String,
    pub(crate) headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) body_len: u64,
    pub(crate) crcs: Vec<u32>,
}

impl Head {
    /// The head for a body given in chunks, its block CRCs computed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: [u8; 16],
        seq: u64,
        times_ms: (u64, u64, u64),
        swr: u32,
        sie: u32,
        header: &ResponseHeader,
        path: &str,
        body: &[&[u8]],
    ) -> Head {
        let (body_len, crcs) = block_crcs(body);
        let headers =
            header.headers.iter().map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        Head {
            key,
            seq,
            created_ms: times_ms.0,
            updated_ms: times_ms.1,
            fresh_until_ms: times_ms.2,
            swr,
            sie,
            status: header.status.as_u16(),
            path: path.to_owned(),
            headers,
            body_len,
            crcs,
        }
    }

    /// The encoded head (the body follows it in the file).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut hdrs = Vec::new();
        hdrs.extend_from_slice(&(self.headers.len() as u16).to_le_bytes());
        for (n, v) in &self.headers {
            hdrs.extend_from_slice(&(n.len() as u16).to_le_bytes());
            hdrs.extend_from_slice(n);
            hdrs.extend_from_slice(&(v.len() as u32).to_le_bytes());
            hdrs.extend_from_slice(v);
        }
        let mut out = Vec::with_capacity(FIXED + self.path.len() + hdrs.len() + 4 * self.crcs.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.key);
        for v in [self.seq, self.created_ms, self.updated_ms, self.fresh_until_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.swr.to_le_bytes());
        out.extend_from_slice(&self.sie.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&(self.path.len() as u16).to_le_bytes());
        out.extend_from_slice(&(hdrs.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(&hdrs);
        for c in &self.crcs {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let crc = head_crc(&out);
        out[80..84].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Whether an object can be stored in this format at all (bounded fields).
    pub(crate) fn fits(path: &str, header: &ResponseHeader, body_len: u64) -> bool {
        let hdrs: usize = 2 + header.headers.iter().map(|(n, v)| 6 + n.as_str().len() + v.len()).sum::<usize>();
        path.len() <= MAX_PATH
            && hdrs <= MAX_HEADERS
            && header.headers.len() <= usize::from(u16::MAX)
            && body_len <= MAX_BODY
    }

    /// Byte offset of the body in the file.
    pub(crate) fn body_offset(&self) -> u64 {
        let hdrs: usize = 2 + self.headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum::<usize>();
        (FIXED + self.path.len() + hdrs + 4 * self.crcs.len()) as u64
    }

    /// Whether `data` is block `i` of the body.
    pub(crate) fn block_ok(&self, i: usize, data: &[u8]) -> bool {
        self.crcs.get(i).is_some_and(|&c| c == crc32fast::hash(data))
    }

    /// The stored response header.
    pub(crate) fn response_header(&self) -> Result<ResponseHeader, FormatError> {
        let mut h = ResponseHeader::build(self.status, Some(self.headers.len())).map_err(|_| FormatError::Field)?;
        for (n, v) in &self.headers {
            let name = http::HeaderName::from_bytes(n).map_err(|_| FormatError::Field)?;
            let value = http::HeaderValue::from_bytes(v).map_err(|_| FormatError::Field)?;
            h.append_header(name, value).map_err(|_| FormatError::Field)?;
        }
        Ok(h)
    }
}

/// The body length and the CRC of each [`BLOCK`] of a body given in chunks of any size.
fn block_crcs(chunks: &[&[u8]]) -> (u64, Vec<u32>) {
    let mut crcs = Vec::new();
    let (mut total, mut in_block) = (0u64, 0usize);
    let mut h = crc32fast::Hasher::new();
    for chunk in chunks {
        let mut c = *chunk;
        while !c.is_empty() {
            let n = c.len().min(BLOCK - in_block);
            h.update(&c[..n]);
            (in_block, total, c) = (in_block + n, total + n as u64, &c[n..]);
            if in_block == BLOCK {
                crcs.push(std::mem::take(&mut h).finalize());
                in_block = 0;
            }
        }
    }
    if in_block > 0 {
        crcs.push(h.finalize());
    }
    (total, crcs)
}

/// The whole head length, from its fixed part (`FIXED` bytes), bounds checked.
pub(crate) fn head_len(fixed: &[u8]) -> Result<usize, FormatError> {
    if fixed.len() < FIXED {
        return Err(FormatError::Truncated);
    }
    if fixed[..8] != MAGIC {
        return Err(FormatError::Magic);
    }
    let path = usize::from(u16::from_le_bytes([fixed[66], fixed[67]]));
    let hdrs = u32::from_le_bytes(fixed[68..72].try_into().map_err(|_| FormatError::Truncated)?) as usize;
    let body = u64::from_le_bytes(fixed[72..80].try_into().map_err(|_| FormatError::Truncated)?);
    if path > MAX_PATH || !(2..=MAX_HEADERS).contains(&hdrs) || body > MAX_BODY {
        return Err(FormatError::Bounds);
    }
    let blocks = usize::try_from(body.div_ceil(BLOCK as u64)).map_err(|_| FormatError::Bounds)?;
    Ok(FIXED + path + hdrs + 4 * blocks)
}

/// Decodes and checks a head (`buf` holds at least [`head_len`] bytes; more is ignored).
pub(crate) fn decode_head(buf: &[u8]) -> Result<Head, FormatError> {
    let len = head_len(buf)?;
    let buf = buf.get(..len).ok_or(FormatError::Truncated)?;
    let stored = u32::from_le_bytes(buf[80..84].try_into().map_err(|_| FormatError::Truncated)?);
    if head_crc(buf) != stored {
        return Err(FormatError::Checksum);
    }
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or_default());
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap_or_default());
    let path_len = usize::from(u16::from_le_bytes([buf[66], buf[67]]));
    let hdrs_len = u32_at(68) as usize;
    let body_len = u64_at(72);
    let mut key = [0; 16];
    key.copy_from_slice(&buf[8..24]);
    let path = std::str::from_utf8(&buf[FIXED..FIXED + path_len]).map_err(|_| FormatError::Field)?.to_owned();
    let mut r = &buf[FIXED + path_len..FIXED + path_len + hdrs_len];
    let count = take_u16(&mut r)?;
    let mut headers = Vec::with_capacity(usize::from(count).min(256));
    for _ in 0..count {
        let n = usize::from(take_u16(&mut r)?);
        let name = take(&mut r, n)?.to_vec();
        let v = take_u32(&mut r)? as usize;
        let value = take(&mut r, v)?.to_vec();
        headers.push((name, value));
    }
    if !r.is_empty() {
        return Err(FormatError::Field);
    }
    let crcs = buf[FIXED + path_len + hdrs_len..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    Ok(Head {
        key,
        seq: u64_at(24),
        created_ms: u64_at(32),
        updated_ms: u64_at(40),
        fresh_until_ms: u64_at(48),
        swr: u32_at(56),
        sie: u32_at(60),
        status: u16::from_le_bytes([buf[64], buf[65]]),
        path,
        headers,
        body_len,
        crcs,
    })
}

/// Decodes a whole file and checks every byte of it: the head, each body block
/// and the length. What the disk tier serves always passes this check (it checks
/// the blocks it reads as it reads them).
pub(crate) fn decode_file(file: &[u8]) -> Result<(Head, &[u8]), FormatError> {
    let head = decode_head(file)?;
    let start = head.body_offset() as usize;
    let body = file.get(start..).ok_or(FormatError::Truncated)?;
    match (body.len() as u64).cmp(&head.body_len) {
        std::cmp::Ordering::Less => return Err(FormatError::Truncated),
        std::cmp::Ordering::Greater => return Err(FormatError::Trailing),
        std::cmp::Ordering::Equal => {}
    }
    for (i, block) in body.chunks(BLOCK).enumerate() {
        if !head.block_ok(i, block) {
            return Err(FormatError::Checksum);
        }
    }
    head.response_header()?;
    Ok((head, body))
}

fn head_crc(head: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..80]);
    h.update(&head[84..]);
    h.finalize()
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], FormatError> {
    if r.len() < n {
        return Err(FormatError::Field);
    }
    let (a, b) = r.split_at(n);
    *r = b;
    Ok(a)
}

fn take_u16(r: &mut &[u8]) -> Result<u16, FormatError> {
    let b = take(r, 2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn take_u32(r: &mut &[u8]) -> Result<u32, FormatError> {
    let b = take(r, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample(body: &[u8]) -> Vec<u8> {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("content-type", "video/mp2t").unwrap();
        h.append_header("etag", "\"abc\"").unwrap();
        // Uneven chunks: the block CRCs do not depend on how the body arrived.
        let (a, b) = body.split_at(body.len() / 3);
        let head = Head::new([7; 16], 42, (1, 2, 3), 4, 5, &h, "/vod/abc/seg1.ts", &[a, b]);
        assert_eq!(head, Head::new([7; 16], 42, (1, 2, 3), 4, 5, &h, "/vod/abc/seg1.ts", &[body]));
        [head.encode(), body.to_vec()].concat()
    }

    #[test]
    fn round_trip() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let file = sample(&body);
        let (head, got) = decode_file(&file).unwrap();
        assert_eq!(got, &body[..]);
        assert_eq!((head.seq, head.path.as_str(), head.crcs.len()), (42, "/vod/abc/seg1.ts", 4));
        let h = head.response_header().unwrap();
        assert_eq!(h.headers.get("etag").unwrap(), "\"abc\"");
        assert_eq!(head.body_offset() as usize + body.len(), file.len());
        assert_eq!(decode_file(&sample(b"")).unwrap().1, b"");
    }

    #[test]
    fn damage_is_refused() {
        let file = sample(&[1u8; 70_000]);
        assert_eq!(decode_file(&file[..file.len() - 1]).unwrap_err(), FormatError::Truncated);
        assert_eq!(decode_file(&[&file[..], b"x"].concat()).unwrap_err(), FormatError::Trailing);
        assert_eq!(decode_file(&file[..10]).unwrap_err(), FormatError::Truncated);
        let mut bad = file.clone();
        bad[0] = b'X';
        assert_eq!(decode_file(&bad).unwrap_err(), FormatError::Magic);
        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode_file(&bad).unwrap_err(), FormatError::Checksum);
        let mut bad = file;
        bad[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_file(&bad).unwrap_err(), FormatError::Bounds);
    }

    proptest! {
        // Any single changed byte or cut is refused; never a panic, never other bytes served.
        #[test]
        fn corrupt_or_truncated_files_never_serve_wrong_bytes(
            len in 0usize..150_000, at in any::<prop::sample::Index>(), xor in 1u8..=255, cut in any::<prop::sample::Index>(),
        ) {
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let file = sample(&body);
            let mut bad = file.clone();
            bad[at.index(file.len())] ^= xor;
            prop_assert!(decode_file(&bad).is_err());
            let short = &file[..cut.index(file.len())];
            prop_assert!(decode_file(short).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
            let mut b = bytes;
            if magic && b.len() >= 8 {
                b[..8].copy_from_slice(&MAGIC);
            }
            let _ = decode_file(&b);
        }
    }

    #[test]
    fn the_fuzz_seeds_are_valid_files() {
        // The `cache_file` fuzz target starts from these: each must be accepted, so
        // the fuzzer mutates valid files and checks they encode back to themselves.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/cache_file");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let (head, body) = decode_file(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!([head.encode(), body.to_vec()].concat(), bytes, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 2, "seeds in {}", dir.display());
    }
}
