//! Signing keys and the key ring: many keys verify, one is active for minting.
//!
//! A key is either an HMAC-SHA256 secret (format version 1) or an Ed25519 key
//! (version 2): the control plane holds Ed25519 private keys, verifiers only
//! the public half. Each key's HMAC state is keyed once (the inner and outer
//! pads are hashed when the key is inserted), so a verification hashes only the
//! token bytes; an Ed25519 public key is decompressed once, when inserted.

use core::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
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

/// Length of an Ed25519 public key, and of an Ed25519 private key (its seed).
pub const ED25519_KEY_LEN: usize = 32;

/// Length of an Ed25519 signature (the tag of a version-2 token).
pub const SIGNATURE_LEN: usize = 64;

/// How a key signs: which token format version it writes and verifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// HMAC-SHA256 truncated to 128 bits, a shared secret (version 1).
    #[default]
    HmacSha256,
    /// Ed25519 (RFC 8032), a private key that signs and a public key that verifies (version 2).
    Ed25519,
}

impl Algorithm {
    /// Both algorithms.
    pub const ALL: [Algorithm; 2] = [Algorithm::HmacSha256, Algorithm::Ed25519];

    /// The stable name used in configuration, the CLI and state files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// Parses [`Algorithm::as_str`].
    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The token format version this algorithm writes.
    pub const fn version(self) -> u8 {
        match self {
            Algorithm::HmacSha256 => 1,
            Algorithm::Ed25519 => 2,
        }
    }

    /// The length of the tag (MAC or signature) ending a token.
    pub const fn tag_len(self) -> usize {
        match self {
            Algorithm::HmacSha256 => TAG_LEN,
            Algorithm::Ed25519 => SIGNATURE_LEN,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Ed25519 private key (the 32-byte seed of RFC 8032). Held by the control
/// plane only; never sent to an edge. `Debug` shows only that it exists.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Secret([u8; ED25519_KEY_LEN]);

impl Ed25519Secret {
    /// From a 32-byte seed, which must come from a CSPRNG.
    pub const fn from_bytes(seed: [u8; ED25519_KEY_LEN]) -> Ed25519Secret {
        Ed25519Secret(seed)
    }

    /// From a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Ed25519Secret> {
        <[u8; ED25519_KEY_LEN]>::try_from(bytes).ok().map(Ed25519Secret)
    }

    /// The seed, for the control plane's storage only.
    pub fn expose(&self) -> &[u8; ED25519_KEY_LEN] {
        &self.0
    }

    /// The public key that verifies this key's signatures.
    pub fn public(&self) -> Ed25519Public {
        Ed25519Public(SigningKey::from_bytes(&self.0).verifying_key().to_bytes())
    }
}

impl fmt::Debug for Ed25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Secret(<redacted>)")
    }
}

/// An Ed25519 public key (32 bytes, the compressed point of RFC 8032). Not
/// secret: it is what edges hold. A verifier accepts only a key that
/// decompresses to a point that is not of small order (see [`KeyRing::insert_ed25519`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519Public([u8; ED25519_KEY_LEN]);

impl Ed25519Public {
    /// From 32 bytes (checked when inserted into a ring).
    pub const fn from_bytes(bytes: [u8; ED25519_KEY_LEN]) -> Ed25519Public {
        Ed25519Public(bytes)
    }

    /// From a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Ed25519Public> {
        <[u8; ED25519_KEY_LEN]>::try_from(bytes).ok().map(Ed25519Public)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; ED25519_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Ed25519Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519Public(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The key material a verifier is given for one key id: what the control
/// plane pushes to edges and what state files hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyKey {
    /// An HMAC-SHA256 secret (it verifies and could mint).
    Hmac(SecretKey),
    /// An Ed25519 public key (it verifies only); its links' sessions do not verify.
    Ed25519(Ed25519Public),
    /// An Ed25519 public key with the key's session secret ([`derive_session_secret`]):
    /// it verifies links, and verifies and issues their sessions.
    Ed25519Session(Ed25519Public, SecretKey),
}

impl VerifyKey {
    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyKey::Hmac(_) => Algorithm::HmacSha256,
            VerifyKey::Ed25519(_) | VerifyKey::Ed25519Session(..) => Algorithm::Ed25519,
        }
    }
}

/// Why a ring refuses an Ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not the encoding of a curve point.
    NotAPoint,
    /// A point of small order: signatures under it prove nothing (strict verification refuses them).
    Weak,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::NotAPoint => "not an Ed25519 public key (the bytes are not a point on the curve)",
            KeyError::Weak => "weak Ed25519 public key (a point of small order)",
        })
    }
}

impl std::error::Error for KeyError {}

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
        let full = self.full(msg);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The full 32-byte HMAC-SHA256 of `msg`.
    pub(crate) fn full(&self, msg: &[u8]) -> [u8; 32] {
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

    /// The outer hash over the inner digest.
    fn finish(&self, state: [u32; 8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        for (i, w) in state.iter().enumerate() {
            block[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut out = self.outer;
        sha2::compress256(&mut out, &[Block::from(block)]);
        let mut mac = [0u8; 32];
        for (i, w) in out.iter().enumerate() {
            mac[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        mac
    }

    /// Constant-time check of `tag` against the tag of `msg`.
    pub(crate) fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        bool::from(self.tag(msg).as_slice().ct_eq(tag))
    }
}

/// One key of a ring, ready to use.
#[derive(Clone)]
pub(crate) enum RingKey {
    /// An HMAC key, keyed.
    Hmac(MacKey),
    /// An Ed25519 public key, decompressed; with its private key when this ring signs.
    Ed25519 { public: Box<VerifyingKey>, signing: Option<Box<SigningKey>> },
}

impl RingKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            RingKey::Hmac(_) => Algorithm::HmacSha256,
            RingKey::Ed25519 { .. } => Algorithm::Ed25519,
        }
    }

    /// The tag of a body, if this key can sign.
    pub(crate) fn sign(&self, body: &[u8]) -> Option<Vec<u8>> {
        match self {
            RingKey::Hmac(mac) => Some(mac.tag(body).to_vec()),
            RingKey::Ed25519 { signing, .. } => signing.as_ref().map(|k| k.sign(body).to_bytes().to_vec()),
        }
    }

    /// Checks a tag: HMAC in constant time; Ed25519 strictly (RFC 8032 with
    /// canonical `S`, and neither the key nor `R` of small order).
    pub(crate) fn verify(&self, body: &[u8], tag: &[u8]) -> bool {
        match self {
            RingKey::Hmac(mac) => mac.verify(body, tag),
            RingKey::Ed25519 { public, .. } => match ed25519_dalek::Signature::from_slice(tag) {
                Ok(sig) => public.verify_strict(body, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// The label a session secret is derived with (`docs/sessions.md`).
pub const SESSION_SECRET_LABEL: &[u8] = b"stile session v1";

/// The session secret of a link key: HMAC-SHA256(key material, `"stile session v1"`),
/// where the material is an HMAC key's secret or an Ed25519 key's private seed.
/// Whoever holds the material can derive it; an edge holding only an Ed25519
/// public key is given it (the push path, or its state file).
pub fn derive_session_secret(material: &[u8; KEY_LEN]) -> SecretKey {
    let mac = MacKey::new(&SecretKey::from_bytes(*material));
    SecretKey::from_bytes(mac.full(SESSION_SECRET_LABEL))
}

/// The keys a verifier knows, by id, and which one (if any) mints; with the
/// session secret of each key that has one.
#[derive(Clone, Default)]
pub struct KeyRing {
    // Sorted by id; a ring holds a handful of keys, so a scan is fastest.
    keys: Vec<(KeyId, RingKey)>,
    /// Session secrets by link key id; an entry exists only while its key does.
    sessions: Vec<(KeyId, MacKey)>,
    active: Option<KeyId>,
}

impl KeyRing {
    /// An empty ring.
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Adds or replaces an HMAC-SHA256 key, with its derived session secret.
    pub fn insert(&mut self, id: KeyId, secret: &SecretKey) {
        self.put(id, RingKey::Hmac(MacKey::new(secret)));
        self.put_session(id, MacKey::new(&derive_session_secret(secret.expose())));
    }

    /// Adds or replaces an Ed25519 public key (verifies only). Refuses bytes
    /// that are not a curve point, and points of small order.
    pub fn insert_ed25519(&mut self, id: KeyId, public: &Ed25519Public) -> Result<(), KeyError> {
        let vk = VerifyingKey::from_bytes(&public.0).map_err(|_| KeyError::NotAPoint)?;
        if vk.is_weak() {
            return Err(KeyError::Weak);
        }
        // A new key under this id: an older session secret does not belong to it.
        if self.ed25519_public(id) != Some(*public) {
            self.sessions.retain(|(k, _)| *k != id);
        }
        self.put(id, RingKey::Ed25519 { public: Box::new(vk), signing: None });
        Ok(())
    }

    /// Adds or replaces an Ed25519 private key (signs and verifies): the
    /// control plane's ring.
    pub fn insert_ed25519_secret(&mut self, id: KeyId, secret: &Ed25519Secret) {
        let sk = SigningKey::from_bytes(&secret.0);
        self.put(id, RingKey::Ed25519 { public: Box::new(sk.verifying_key()), signing: Some(Box::new(sk)) });
        self.put_session(id, MacKey::new(&derive_session_secret(secret.expose())));
    }

    /// Sets the session secret of a key the ring holds (an edge given an Ed25519
    /// public key gets its session secret this way); `false` if the key is absent.
    pub fn set_session_secret(&mut self, id: KeyId, secret: &SecretKey) -> bool {
        let present = self.contains(id);
        if present {
            self.put_session(id, MacKey::new(secret));
        }
        present
    }

    /// Whether the ring holds a session secret for this key.
    pub fn has_session_secret(&self, id: KeyId) -> bool {
        self.session_key(id).is_some()
    }

    pub(crate) fn session_key(&self, id: KeyId) -> Option<&MacKey> {
        self.sessions.iter().find(|(k, _)| *k == id).map(|(_, m)| m)
    }

    fn put_session(&mut self, id: KeyId, key: MacKey) {
        match self.sessions.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) => self.sessions[i].1 = key,
            Err(i) => self.sessions.insert(i, (id, key)),
        }
    }

    /// Adds or replaces a key given as a verifier receives it.
    pub fn insert_key(&mut self, id: KeyId, key: &VerifyKey) -> Result<(), KeyError> {
        match key {
            VerifyKey::Hmac(secret) => {
                self.insert(id, secret);
                Ok(())
            }
            VerifyKey::Ed25519(public) => self.insert_ed25519(id, public),
            VerifyKey::Ed25519Session(public, session) => {
                self.insert_ed25519(id, public)?;
                self.set_session_secret(id, session);
                Ok(())
            }
        }
    }

    fn put(&mut self, id: KeyId, key: RingKey) {
        match self.keys.binary_search_by_key(&id, |(k, _)| *k) {
            Ok(i) => self.keys[i].1 = key,
            Err(i) => self.keys.insert(i, (id, key)),
        }
    }

    /// Removes a key and its session secret; tokens signed with it, and their
    /// sessions, stop verifying. Clears `active` if it was.
    pub fn remove(&mut self, id: KeyId) -> bool {
        if self.active == Some(id) {
            self.active = None;
        }
        self.sessions.retain(|(k, _)| *k != id);
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

    /// The algorithm of a key the ring holds.
    pub fn algorithm(&self, id: KeyId) -> Option<Algorithm> {
        self.get(id).map(RingKey::algorithm)
    }

    /// The Ed25519 public key held for `id`, if the key is an Ed25519 one.
    pub fn ed25519_public(&self, id: KeyId) -> Option<Ed25519Public> {
        match self.get(id)? {
            RingKey::Ed25519 { public, .. } => Some(Ed25519Public(public.to_bytes())),
            RingKey::Hmac(_) => None,
        }
    }

    /// What the ring holds for `id` that a session credential's cryptographic checks
    /// depend on: the key's algorithm, its Ed25519 public key if any, and its session
    /// secret. `None` without a key or without a session secret (no session verifies).
    /// Two equal bindings give every session credential of that key id the same result
    /// for [`crate::Session::verify_link`] and [`crate::Session::verify_mac`], so a
    /// verifier that remembers a credential's binding can skip both while the ring still
    /// holds an equal one (the edge's verified-session cache).
    pub fn session_binding(&self, id: KeyId) -> Option<SessionBinding> {
        let key = self.get(id)?;
        let session = self.session_key(id)?;
        let public = match key {
            RingKey::Ed25519 { public, .. } => Some(public.to_bytes()),
            RingKey::Hmac(_) => None,
        };
        Some(SessionBinding { algorithm: key.algorithm(), public, inner: session.inner, outer: session.outer })
    }

    pub(crate) fn get(&self, id: KeyId) -> Option<&RingKey> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, m)| m)
    }
}

/// A key's session-relevant material, from [`KeyRing::session_binding`]: compared,
/// never shown (it holds the session secret's keyed HMAC states).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionBinding {
    algorithm: Algorithm,
    public: Option<[u8; ED25519_KEY_LEN]>,
    inner: [u32; 8],
    outer: [u32; 8],
}

impl fmt::Debug for SessionBinding {
    /// The algorithm only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionBinding").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.iter().map(|(k, key)| (*k, key.algorithm())).collect::<Vec<_>>())
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

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let v: Vec<u8> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
        v.try_into().unwrap()
    }

    /// RFC 8032 § 7.1, tests 1 and 2: our ring signs and verifies as the RFC does.
    #[test]
    fn rfc8032_vectors() {
        let cases = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                &b""[..],
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                &[0x72][..],
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (seed, public, msg, sig) in cases {
            let secret = Ed25519Secret::from_bytes(unhex(seed));
            assert_eq!(secret.public(), Ed25519Public::from_bytes(unhex(public)));
            let mut signer = KeyRing::new();
            signer.insert_ed25519_secret(1, &secret);
            let tag = signer.get(1).unwrap().sign(msg).unwrap();
            assert_eq!(tag, unhex::<64>(sig));
            let mut verifier = KeyRing::new();
            verifier.insert_ed25519(1, &secret.public()).unwrap();
            let key = verifier.get(1).unwrap();
            assert!(key.verify(msg, &tag));
            assert_eq!(key.sign(msg), None, "a public key cannot sign");
            let mut other = tag.clone();
            other[10] ^= 1;
            assert!(!key.verify(msg, &other));
            assert!(!key.verify(msg, &tag[..63]), "a short signature");
        }
    }

    /// Strict verification: `S + L` (same signature modulo the group order,
    /// non-canonical) is refused, and so are public keys of small order.
    #[test]
    fn ed25519_is_strict() {
        let secret = Ed25519Secret::from_bytes([0x42; 32]);
        let mut ring = KeyRing::new();
        ring.insert_ed25519(5, &secret.public()).unwrap();
        let mut signer = KeyRing::new();
        signer.insert_ed25519_secret(5, &secret);
        let sig = signer.get(5).unwrap().sign(b"body").unwrap();
        assert!(ring.get(5).unwrap().verify(b"body", &sig));
        // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
        let l: [u8; 32] = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut high = sig.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(high[32 + i]) + u16::from(l[i]) + carry;
            high[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!ring.get(5).unwrap().verify(b"body", &high), "non-canonical S accepted");
        // The identity (y = 1) and a point of order 8 are weak; y = 2 is not on the curve.
        let identity: [u8; 32] = unhex("0100000000000000000000000000000000000000000000000000000000000000");
        let order8: [u8; 32] = unhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a");
        assert_eq!(ring.insert_ed25519(6, &Ed25519Public::from_bytes(identity)), Err(KeyError::Weak));
        assert_eq!(ring.insert_ed25519(6, &Ed25519Public::from_bytes(order8)), Err(KeyError::Weak));
        let not_a_point: [u8; 32] = unhex("0200000000000000000000000000000000000000000000000000000000000000");
        assert_eq!(ring.insert_ed25519(6, &Ed25519Public::from_bytes(not_a_point)), Err(KeyError::NotAPoint));
        assert!(!ring.contains(6));
        assert_eq!(format!("{secret:?}"), "Ed25519Secret(<redacted>)");
        assert_eq!(ring.algorithm(5), Some(Algorithm::Ed25519));
        assert_eq!(ring.ed25519_public(5), Some(secret.public()));
    }

    #[test]
    fn algorithm_names() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
        }
        assert_eq!(Algorithm::parse("HMAC"), None);
        assert_eq!(Algorithm::default(), Algorithm::HmacSha256);
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
