//! Signing keys and the key ring: many keys verify, one is active for minting.
//!
//! Each key's HMAC state is keyed once (the inner and outer pads are hashed
//! when the key is inserted), so a verification hashes only the token bytes.

use core::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
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

/// A keyed HMAC-SHA256 state, ready to MAC a message.
#[derive(Clone)]
pub(crate) struct MacKey(Hmac<Sha256>);

impl MacKey {
    fn new(secret: &SecretKey) -> MacKey {
        // HMAC zero-pads keys shorter than the block, so keying with the
        // zero-padded 64-byte block is HMAC with the 32-byte key, infallibly.
        let mut block = [0u8; 64];
        block[..KEY_LEN].copy_from_slice(&secret.0);
        MacKey(<Hmac<Sha256> as KeyInit>::new(&block.into()))
    }

    /// The truncated tag of `msg`.
    pub(crate) fn tag(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(msg);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
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

    #[test]
    fn hmac_sha256_rfc4231_case_2_truncated() {
        // RFC 4231 test case 2 uses a 4-byte key; check our state through `Hmac` directly.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let full = mac.finalize().into_bytes();
        assert_eq!(
            full[..16],
            [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7]
        );
    }

    #[test]
    fn padded_block_keying_equals_plain_keying() {
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
