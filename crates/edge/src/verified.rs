//! The verified-signature cache: Ed25519 tokens whose signature verified.
//!
//! An Ed25519 verification costs tens of microseconds (about a hundred HMACs),
//! and a viewer presents the same token on every segment request. The cache
//! remembers, for a bounded number of tokens, that this exact token verified
//! under this exact public key, so the next request skips the signature check
//! only. Everything else — the key still being in the ring (a retired key has
//! left it: the lookup misses and the ring says `unknown_key`/`revoked`),
//! expiry, scope, bindings, revocations, staleness — is checked on every
//! request as before.
//!
//! Safety of a hit:
//! - an entry is the SHA-256 of every decoded token byte (body and signature)
//!   and the 32 bytes of the public key that verified it, and a hit compares
//!   both in full. A forged token would need a SHA-256 collision with a token
//!   that verified; the 128-bit map key is only an index;
//! - the public key compared is the one the ring holds for the token's key id
//!   now, so a key id that names another key (a store restored from a backup
//!   reissuing an id) misses;
//! - only tokens that verified are inserted, so an attacker sending unique
//!   forged tokens never adds an entry; unique valid tokens (which only the
//!   control plane can sign) are bounded by the fixed capacity, evicted by
//!   TinyUFO (TinyLFU admission, S3-FIFO eviction), so memory stays bounded;
//! - HMAC tokens (version 1) never use the cache: their MAC is cheaper than
//!   the SHA-256 of the lookup.

use prometheus::{IntCounter, IntCounterVec, Opts};
use sha2::{Digest, Sha256};
use stile_token::{Algorithm, KeyRing, Reason, Token};
use tinyufo::TinyUfo;

/// One verified token: what a hit must match in full.
#[derive(Clone, Copy)]
struct Entry {
    /// SHA-256 of the decoded token (body and signature).
    digest: [u8; 32],
    /// The public key that verified it.
    public: [u8; 32],
}

/// A bounded cache of verified Ed25519 signatures. Cheap to share behind an `Arc`.
pub struct VerifiedCache {
    map: Option<TinyUfo<u128, Entry>>,
    lookups: IntCounterVec,
    hits: IntCounter,
    misses: IntCounter,
}

impl core::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("enabled", &self.map.is_some())
            .field("hits", &self.hits.get())
            .field("misses", &self.misses.get())
            .finish()
    }
}

impl VerifiedCache {
    /// A cache of at most `entries` tokens; 0 disables it (every Ed25519 token is verified).
    pub fn new(entries: usize) -> VerifiedCache {
        let lookups = IntCounterVec::new(
            Opts::new(
                "stile_edge_verified_cache_lookups_total",
                "Ed25519 signature checks by verified-signature cache result (hit: signature check skipped).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let hits = lookups.with_label_values(&["hit"]);
        let misses = lookups.with_label_values(&["miss"]);
        let map = (entries > 0).then(|| TinyUfo::new(entries, entries));
        VerifiedCache { map, lookups, hits, misses }
    }

    /// `stile_edge_verified_cache_lookups_total{result}`, for the edge's registry.
    pub fn metric(&self) -> IntCounterVec {
        self.lookups.clone()
    }

    /// Hits so far.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Misses so far.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// [`Token::verify_signature`], skipping the Ed25519 check for a token that
    /// verified before under the key the ring holds now. Same result as
    /// `token.verify_signature(ring)` for every token and ring.
    pub fn verify(&self, token: &Token, ring: &KeyRing) -> Result<(), Reason> {
        let (Some(map), Algorithm::Ed25519) = (&self.map, token.algorithm()) else {
            return token.verify_signature(ring);
        };
        // No Ed25519 key of that id: `verify_signature` says why (unknown_key).
        let Some(public) = ring.ed25519_public(token.key_id()) else {
            return token.verify_signature(ring);
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let index = u128::from_le_bytes(digest[..16].try_into().unwrap_or([0; 16]));
        if let Some(hit) = map.get(&index)
            && hit.digest == digest
            && hit.public == *public.as_bytes()
        {
            self.hits.inc();
            return Ok(());
        }
        self.misses.inc();
        token.verify_signature(ring)?;
        map.put(index, Entry { digest, public: *public.as_bytes() }, 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use stile_token::{Claims, Ed25519Secret, KEY_LEN, Scope, SecretKey, TokenId, sign};

    use super::*;

    fn claims(key_id: u32, token_id: u64) -> Claims {
        Claims {
            key_id,
            token_id: TokenId::from_u64(token_id),
            issued_at: 1_000,
            not_before: None,
            expires_at: 2_000,
            scope: Scope::Prefix("/vod/abc/".into()),
            ip: None,
            countries: None,
            subject: None,
            channel: None,
        }
    }

    fn signer() -> KeyRing {
        let mut ring = KeyRing::new();
        ring.insert_ed25519_secret(2, &Ed25519Secret::from_bytes([2; 32]));
        ring.insert_ed25519_secret(3, &Ed25519Secret::from_bytes([3; 32]));
        ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
        ring
    }

    fn edge_ring() -> KeyRing {
        let mut ring = KeyRing::new();
        ring.insert_ed25519(2, &Ed25519Secret::from_bytes([2; 32]).public()).unwrap();
        ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
        ring
    }

    fn parse(s: &str) -> Token {
        Token::parse(s).unwrap()
    }

    #[test]
    fn a_verified_token_hits_and_a_forgery_never_does() {
        let cache = VerifiedCache::new(16);
        let ring = edge_ring();
        let good = sign(&claims(2, 7), &signer()).unwrap();
        assert_eq!(cache.verify(&parse(&good), &ring), Ok(()));
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        assert_eq!(cache.verify(&parse(&good), &ring), Ok(()));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        // The same claims with a flipped signature bit: a miss, then bad_signature; never inserted.
        let mut raw = parse(&good).as_bytes().to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let forged = base64_url(&raw);
        for _ in 0..3 {
            assert_eq!(cache.verify(&parse(&forged), &ring), Err(Reason::BadSignature));
        }
        assert_eq!((cache.hits(), cache.misses()), (1, 4));
        // Another token (changed claims), even signed by a key the edge lacks: misses.
        let other = sign(&claims(3, 7), &signer()).unwrap();
        assert_eq!(cache.verify(&parse(&other), &ring), Err(Reason::UnknownKey));
    }

    #[test]
    fn a_key_leaving_the_ring_or_changing_misses() {
        let cache = VerifiedCache::new(16);
        let good = sign(&claims(2, 7), &signer()).unwrap();
        assert_eq!(cache.verify(&parse(&good), &edge_ring()), Ok(()));
        // Retired: the key left the ring; the cached entry does not help.
        let mut retired = edge_ring();
        retired.remove(2);
        assert_eq!(cache.verify(&parse(&good), &retired), Err(Reason::UnknownKey));
        // Key id 2 now names another public key: the entry's key differs, so it is checked again.
        let mut reissued = edge_ring();
        reissued.insert_ed25519(2, &Ed25519Secret::from_bytes([9; 32]).public()).unwrap();
        let before = cache.hits();
        assert_eq!(cache.verify(&parse(&good), &reissued), Err(Reason::BadSignature));
        assert_eq!(cache.hits(), before);
        // Key id 2 as an HMAC key: unknown_key (the algorithm differs).
        let mut hmac = KeyRing::new();
        hmac.insert(2, &SecretKey::from_bytes([2; KEY_LEN]));
        assert_eq!(cache.verify(&parse(&good), &hmac), Err(Reason::UnknownKey));
    }

    #[test]
    fn hmac_tokens_and_a_disabled_cache_verify_every_time() {
        let hmac = sign(&claims(1, 7), &signer()).unwrap();
        let cache = VerifiedCache::new(16);
        assert_eq!(cache.verify(&parse(&hmac), &edge_ring()), Ok(()));
        assert_eq!((cache.hits(), cache.misses()), (0, 0));
        let off = VerifiedCache::new(0);
        let good = sign(&claims(2, 7), &signer()).unwrap();
        for _ in 0..2 {
            assert_eq!(off.verify(&parse(&good), &edge_ring()), Ok(()));
        }
        assert_eq!((off.hits(), off.misses()), (0, 0));
    }

    /// Memory stays bounded under many unique valid tokens: the cache holds at
    /// most its capacity (older entries are evicted and simply verify again).
    #[test]
    fn unique_tokens_stay_within_capacity() {
        let cache = VerifiedCache::new(8);
        let ring = edge_ring();
        let tokens: Vec<String> = (0..64).map(|i| sign(&claims(2, i), &signer()).unwrap()).collect();
        for t in &tokens {
            assert_eq!(cache.verify(&parse(t), &ring), Ok(()));
        }
        let held = tokens.iter().filter(|t| cache.map.as_ref().unwrap().get(&index_of(t)).is_some()).count();
        assert!(held <= 8, "{held} entries held in a cache of 8");
        // Every token still verifies (a miss costs a verification, never a denial).
        for t in &tokens {
            assert_eq!(cache.verify(&parse(t), &ring), Ok(()));
        }
    }

    fn index_of(token: &str) -> u128 {
        let digest: [u8; 32] = Sha256::digest(parse(token).as_bytes()).into();
        u128::from_le_bytes(digest[..16].try_into().unwrap())
    }

    fn base64_url(raw: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }
}
