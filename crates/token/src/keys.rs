//! Signing keys and the key ring: many keys verify, one is active for minting.
//!
//! Each key's HMAC state is keyed once (the inner and outer pads are hashed
//! when the key is inserted), so a verification hashes only the token bytes.

use core::fmt;

use subtle::ConstantTimeEq;

use crate::claims::KeyId;

/// Length of a signing key's secret in bytes.
pub const KEY_LEN: usize = 32;

/// Length of the MAC tag in a token (128 bits of HMAC-SHA256).
pub const TAG_LEN: usize = 16;

/// A signing key's secret. Never printed: `Debug` shows only that it exists.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// From exactly [`KEY_LEN`] bytes, which must come from a CSPRNG.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(bytes)
    }

    /// From a slice that must be exactly [`KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<SecretKey> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(SecretKey)
    }

    /// The secret bytes, for storage and distribution to edges only.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A keyed HMAC-SHA256 (RFC 2104): the SHA-256 states after the inner and
/// outer pad blocks, computed once per key. A tag then costs only the
/// compressions of the message and of the outer block (three for a typical
/// 70-byte body), with no buffering: the padding is written directly.
#[derive(Clone)]
pub(crate) struct MacKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

/// SHA-256 initial hash value (FIPS 180-4 § 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

type Block = sha2::digest::generic_array::GenericArray<u8, sha2::digest::consts::U64>;

impl MacKey {
    fn new(secret: &SecretKey) -> MacKey {
        // Keys shorter than the 64-byte block are zero-padded (RFC 2104).
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in secret.0.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = SHA256_IV;
        let mut outer = SHA256_IV;
        sha2::compress256(&mut inner, &[Block::from(ipad)]);
        sha2::compress256(&mut outer, &[Block::from(opad)]);
        MacKey { inner, outer }
    }

    /// The truncated tag of `msg`.
    pub(crate) fn tag(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        let mut state = self.inner;
        let mut blocks = msg.chunks_exact(64);
        for b in &mut blocks {
            sha2::compress256(&mut state, core::slice::from_ref(Block::from_slice(b)));
        }
        // Final block(s): the rest, 0x80, zeros, then the bit length of
        // everything hashed after the IV (the 64-byte pad block + msg).
        let rest = blocks.remainder();
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let n = if rest.len() < 56 { 64 } else { 128 };
        let bits = ((64 + msg.len()) as u64).wrapping_mul(8);
        tail[n - 8..n].copy_from_slice(&bits.to_be_bytes());
        for b in tail[..n].chunks_exact(64) {
            sha2::compress256(&mut state, core::slice::from_ref(Block::from_slice(b)));
        }
        self.finish(state)
    }

    /// The outer hash over the inner digest, truncated.
    fn finish(&self, state: [u32; 8]) -> [u8; TAG_LEN] {
        let mut block = [0u8; 64];
        for (i, w) in state.iter().enumerate() {
            block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut out = self.outer;
        sha2::compress256(&mut out, &[Block::from(block)]);
        let mut tag = [0u8; TAG_LEN];
        for (i, w) in out.iter().take(TAG_LEN / 4).enumerate() {
            tag[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        tag
    }

    /// Constant-time check of `tag` against the tag of `msg`.
    pub(crate) fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        bool::from(self.tag(msg).as_slice().ct_eq(tag))
    }
}

/// The keys a verifier knows, by id, and which one (if any) mints.
#[derive(Clone, Default)]
pub struct KeyRing {
    // Sorted by id; a ring holds a handful of keys, so a scan is fastest.
    keys: Vec<(KeyId, MacKey)>,
    active: Option<KeyId>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, id: KeyId, secret: &SecretKey) {
        let key = MacKey::new(secret);
        match self.keys.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) => self.keys[i].1 = key,
            Err(i) => self.keys.insert(i, (id, key)),
        }
    }

    /// Removes a key; tokens signed with it stop verifying. Clears `active` if it was.
    pub fn remove(&mut self, id: KeyId) -> bool {
        if self.active == Some(id) {
            self.active = None;
        }
        match self.keys.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) => {
                self.keys.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Makes a key the one used for minting. It must be in the ring.
    pub fn set_active(&mut self, id: KeyId) -> bool {
        let present = self.contains(id);
        if present {
            self.active = Some(id);
        }
        present
    }

    /// The minting key's id.
    pub fn active(&self) -> Option<KeyId> {
        self.active
    }

    /// Whether the ring holds this key.
    pub fn contains(&self, id: KeyId) -> bool {
        self.get(id).is_some()
    }

    /// The key ids held, ascending.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(k, _)| *k)
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn get(&self, id: KeyId) -> Option<&MacKey> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, m)| m)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    /// Our HMAC against the `hmac` crate for every message length that
    /// crosses a padding boundary, and a few keys.
    #[test]
    fn matches_reference_hmac_for_all_lengths() {
        let msg: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key in [[0u8; KEY_LEN], [0xff; KEY_LEN], *b"0123456789abcdef0123456789abcdef"] {
            let ours = MacKey::new(&SecretKey::from_bytes(key));
            for n in 0..msg.len() {
                let mut r = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
                r.update(&msg[..n]);
                let full = r.finalize().into_bytes();
                assert_eq!(ours.tag(&msg[..n]), full[..TAG_LEN], "length {n}");
                assert!(ours.verify(&msg[..n], &full[..TAG_LEN]));
            }
        }
    }

    #[test]
    fn rfc4231_case_1_truncated() {
        // Key = 0x0b * 20 (shorter than ours; zero padding makes it a 32-byte key).
        let mut key = [0u8; KEY_LEN];
        key[..20].fill(0x0b);
        let tag = MacKey::new(&SecretKey::from_bytes(key)).tag(b"Hi There");
        assert_eq!(
            tag,
            [0xb0, 0x34, 0x4c, 0x61, 0xd8, 0xdb, 0x38, 0x53, 0x5c, 0xa8, 0xaf, 0xce, 0xaf, 0x0b, 0xf1, 0x2b]
        );
    }

    #[test]
    fn rfc4231_case_2_truncated() {
        // RFC 4231 test case 2 uses the 4-byte key "Jefe"; HMAC zero-pads short keys to
        // the block size, so the same key zero-padded to 32 bytes gives the same tag.
        let mut key = [0u8; KEY_LEN];
        key[..4].copy_from_slice(b"Jefe");
        let tag = MacKey::new(&SecretKey::from_bytes(key)).tag(b"what do ya want for nothing?");
        assert_eq!(
            tag,
            [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7]
        );
    }

    #[test]
    fn keying_matches_reference() {
        let secret = SecretKey::from_bytes(*b"0123456789abcdef0123456789abcdef");
        let mut plain = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose()).unwrap();
        plain.update(b"msg");
        let full = plain.finalize().into_bytes();
        assert_eq!(MacKey::new(&secret).tag(b"msg"), full[..TAG_LEN]);
    }

    #[test]
    fn ring_bookkeeping_and_redaction() {
        let mut ring = KeyRing::new();
        let s = SecretKey::from_bytes([7; KEY_LEN]);
        assert_eq!(format!("{s:?}"), "SecretKey(<redacted>)");
        assert!(!ring.set_active(3));
        ring.insert(3, &s);
        ring.insert(1, &s);
        assert!(ring.set_active(3));
        assert_eq!(ring.ids().collect::<Vec<_>>(), vec![1, 3]);
        assert!(ring.remove(3));
        assert_eq!(ring.active(), None);
        assert!(!ring.remove(3));
        assert!(!format!("{ring:?}").contains("7, 7"));
        assert!(SecretKey::from_slice(&[1; 31]).is_none());
    }
}
