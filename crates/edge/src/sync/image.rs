//! The sync cache's binary form (`state.file` of an edge with `[sync]`): at
//! millions of token-id revocations the state-file JSON is hundreds of MB
//! (about 80 bytes an entry) and seconds to build and write, and the cache is
//! written whole after every snapshot, before its ACK. From
//! [`BINARY_FROM_TOKENS`] token ids on, the cache is written in this form:
//! the token ids as fixed 12-byte records straight from the applied table,
//! everything else as the state-file JSON it always was. Below that it stays
//! the plain state-file JSON (readable with `jq`, usable with `stile explain
//! --key-file`), which costs little at that size.
//!
//! ```text
//! magic     8 bytes   "STILESC1"
//! head_len  u32 LE    at most 64 MiB
//! head      JSON      the state file without token-id revocations
//!                     (version, generated_at, keys, other revocations)
//! count     u64 LE    token ids that follow
//! records   count × (id u64 LE, expiry u32 LE; 0: never)
//! crc       u32 LE    CRC-32 (IEEE) of every byte before it
//! ```
//!
//! The file's length must be exactly what the head length and the count
//! say, and the CRC must match: a truncated or damaged file is refused with
//! a message naming what is wrong, and the edge starts empty and gets a
//! snapshot (`persist::load_cache`), as for any unusable cache. A cache
//! written by an older edge (the JSON state file) still loads.

use std::io::{self, Read, Write};
use std::path::Path;

use stile_token::TokenId;

use super::model::Model;
use crate::revocation::TokenIds;
use crate::state::{RevocationEntry, RevocationKind, StateError, StateFile};

/// Token ids from which the cache is written in the binary form (the JSON
/// of this many is about 5 MB).
pub(crate) const BINARY_FROM_TOKENS: usize = 1 << 16;
/// The first bytes of a binary sync cache.
pub(crate) const MAGIC: &[u8; 8] = b"STILESC1";
/// Largest head accepted (keys and non-token revocations; far beyond any real one).
const HEAD_MAX: u64 = 64 << 20;
/// Bytes of one token-id record.
const RECORD: u64 = 12;
/// Bytes besides the head and the records: magic, head length, count, CRC.
const FRAME: u64 = 8 + 4 + 8 + 4;
/// Records decoded at a time.
const BLOCK: usize = 1 << 14;
/// Most token-id slots reserved ahead from the count.
const RESERVE_MAX: u64 = 1 << 24;

/// What a full cache write holds: taken on the receive loop in time
/// independent of the number of token ids (the table is shared), encoded on
/// the blocking pool.
#[derive(Debug)]
pub struct CacheImage {
    pub(crate) head: StateFile,
    pub(crate) tokens: TokenIds,
}

impl CacheImage {
    /// The applied version it holds.
    pub(crate) fn version(&self) -> u64 {
        self.head.version
    }

    /// Writes it in the binary form.
    pub(crate) fn write_to(&self, w: impl Write) -> io::Result<()> {
        let mut w = Crc { inner: w, crc: crc32fast::Hasher::new() };
        let head = serde_json::to_vec(&self.head).map_err(io::Error::other)?;
        let head_len = u32::try_from(head.len()).ok().filter(|&n| u64::from(n) <= HEAD_MAX);
        let head_len = head_len.ok_or_else(|| io::Error::other("sync cache head too large"))?;
        w.write_all(MAGIC)?;
        w.write_all(&head_len.to_le_bytes())?;
        w.write_all(&head)?;
        w.write_all(&(self.tokens.len() as u64).to_le_bytes())?;
        let mut record = [0u8; RECORD as usize];
        for (id, expiry) in self.tokens.iter() {
            record[..8].copy_from_slice(&id.as_u64().to_le_bytes());
            record[8..].copy_from_slice(&u32::try_from(expiry).unwrap_or(u32::MAX).to_le_bytes());
            w.write_all(&record)?;
        }
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())
    }

    /// Whether it is written in the binary form (else as state-file JSON).
    pub(crate) fn binary(&self) -> bool {
        self.tokens.len() >= BINARY_FROM_TOKENS
    }

    /// The state-file form (token ids first, in id order, then the rest).
    pub(crate) fn into_file(self) -> StateFile {
        let mut tokens: Vec<(TokenId, u64)> = self.tokens.iter().collect();
        tokens.sort_unstable_by_key(|(id, _)| id.as_u64());
        let mut file = self.head;
        let tokens = tokens.into_iter().map(|(id, expires_at)| RevocationEntry {
            kind: RevocationKind::TokenId,
            value: id.to_string(),
            issued_before: None,
            expires_at,
        });
        file.revocations.splice(0..0, tokens);
        file
    }

    /// The binary form in memory.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail but for a head past HEAD_MAX, which no model has.
        let _ = self.write_to(&mut out);
        out
    }
}

/// Reads a binary cache of `len` bytes from `r` (after nothing: `r` starts at
/// the magic) into the model it holds and the time it was generated. `path`
/// names the file in errors.
pub(crate) fn read(r: impl Read, len: u64, path: &Path) -> Result<(Model, u64), StateError> {
    let bad =
        |message: String| StateError::Invalid { path: path.to_owned(), message: format!("sync cache: {message}") };
    let io = |source: io::Error| StateError::Read { path: path.to_owned(), source };
    let mut r = Crc { inner: r, crc: crc32fast::Hasher::new() };
    if len < FRAME {
        return Err(bad(format!("{len} bytes, shorter than any cache")));
    }
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(bad("not a binary sync cache (bad magic)".into()));
    }
    let head_len = u64::from(u32::from_le_bytes(array(&mut r).map_err(io)?));
    if head_len > HEAD_MAX || FRAME + head_len > len {
        return Err(bad(format!("head of {head_len} bytes in a file of {len} (truncated or damaged)")));
    }
    let mut head = vec![0u8; head_len as usize];
    r.read_exact(&mut head).map_err(io)?;
    let head: StateFile =
        serde_json::from_slice(&head).map_err(|source| StateError::Parse { path: path.to_owned(), source })?;
    let count = u64::from_le_bytes(array(&mut r).map_err(io)?);
    let expected = count.checked_mul(RECORD).and_then(|b| b.checked_add(FRAME + head_len));
    if expected != Some(len) {
        return Err(bad(format!("{count} token ids do not fit a file of {len} bytes (truncated or damaged)")));
    }
    let mut tokens = TokenIds::with_capacity(count.min(RESERVE_MAX) as usize);
    let mut block = vec![0u8; BLOCK * RECORD as usize];
    let mut left = count;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        let bytes = &mut block[..n * RECORD as usize];
        r.read_exact(bytes).map_err(io)?;
        tokens.extend_new(bytes.chunks_exact(RECORD as usize).map(|rec| {
            let (id, expiry) = rec.split_at(8);
            let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
            let expiry = u32::from_le_bytes(expiry.try_into().unwrap_or_default());
            (TokenId::from_u64(id), u64::from(expiry))
        }));
        left -= n as u64;
    }
    let computed = r.crc.clone().finalize();
    let stored = u32::from_le_bytes(array(&mut r.inner).map_err(io)?);
    if computed != stored {
        return Err(bad(format!("checksum {stored:08x} does not match the content ({computed:08x}): damaged")));
    }
    if tokens.len() as u64 != count {
        return Err(bad(format!("{count} token ids with repeats ({} distinct)", tokens.len())));
    }
    let generated_at = head.generated_at.unwrap_or(0);
    let model = Model::from_image(&head, tokens, path)?;
    Ok((model, generated_at))
}

/// Decodes a binary cache held in memory (for the fuzz target and tests).
pub fn decode(bytes: &[u8]) -> Result<(Model, u64), StateError> {
    read(bytes, bytes.len() as u64, Path::new("sync-cache"))
}

fn array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// A reader or writer that keeps the CRC of what went through.
struct Crc<T> {
    inner: T,
    crc: crc32fast::Hasher,
}

impl<T: Read> Read for Crc<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

impl<T: Write> Write for Crc<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use stile_proto::v1 as pb;

    use super::*;

    fn model(tokens: u64) -> Model {
        let mut m = Model::default();
        let key =
            pb::EdgeKey { key_id: 1, state: pb::KeyState::Active.into(), secret: vec![5; 32], ..Default::default() };
        let revocation = |version: u64, target| pb::Revocation {
            version,
            target: Some(pb::RevocationTarget { target: Some(target) }),
            expires_at: 2_000_000_000 + version,
            ..Default::default()
        };
        let mut revocations: Vec<pb::Revocation> = (0..tokens)
            .map(|i| revocation(i + 1, pb::revocation_target::Target::TokenId(format!("{:016x}", i * 0x1_0001 + 7))))
            .collect();
        revocations.push(revocation(
            tokens + 1,
            pb::revocation_target::Target::Subject(pb::SubjectTarget { subject: "alice".into(), issued_before: 9 }),
        ));
        m.apply_snapshot(&pb::Snapshot { version: 42, keys: vec![key], revocations, ..Default::default() }).unwrap();
        m
    }

    #[test]
    fn the_binary_cache_round_trips() {
        for n in [0, 1, 40_000] {
            let m = model(n);
            let bytes = m.to_image(1_234).encode();
            assert!(bytes.len() as u64 <= n * RECORD + 1_000, "{} bytes for {n} token ids", bytes.len());
            let (back, generated_at) = decode(&bytes).unwrap();
            assert_eq!((back, generated_at), (m, 1_234));
        }
    }

    #[test]
    fn a_truncated_or_damaged_cache_is_refused_with_what_is_wrong() {
        let bytes = model(100).to_image(1).encode();
        let err = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("truncated or damaged"), "{}", err(&bytes[..bytes.len() - 1]));
        assert!(err(&bytes[..10]).contains("shorter than any cache"), "{}", err(&bytes[..10]));
        let mut flipped = bytes.clone();
        let last_record = bytes.len() - 4 - 3;
        flipped[last_record] ^= 0x40;
        assert!(err(&flipped).contains("does not match the content"), "{}", err(&flipped));
        let mut magic = bytes.clone();
        magic[0] = b'{';
        assert!(err(&magic).contains("bad magic"), "{}", err(&magic));
        let mut head = bytes;
        head[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err(&head).contains("head of 4294967295 bytes"), "{}", err(&head));
    }

    #[test]
    fn the_fuzz_seeds_are_valid_caches() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sync_cache");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
                let (m, _) =
                    decode(&std::fs::read(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(m.version == 0 || m.to_state(0, &crate::state::Liveness::default()).revocations.len() == 4);
                seen += 1;
            }
        }
        assert_eq!(seen, 2);
    }

    #[test]
    fn repeated_token_ids_are_refused() {
        let m = model(2);
        let mut bytes = m.to_image(1).encode();
        // Make the second record's id the first's, and fix the CRC.
        let records = bytes.len() - 4 - 2 * RECORD as usize;
        let first: [u8; 8] = bytes[records..records + 8].try_into().unwrap();
        bytes[records + 12..records + 20].copy_from_slice(&first);
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&bytes).unwrap_err().to_string().contains("with repeats"));
    }
}
