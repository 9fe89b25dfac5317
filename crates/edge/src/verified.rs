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
//!
//! [`SessionCache`], the verified-session cache, does the same for playback
//! session credentials (`docs/sessions.md`), which a player presents unchanged on
//! every segment until the edge renews them: a hit skips the parse of the
//! credential, the link's key and signature check and the session tag — the
//! crypto and the decoding — and hands back the session parsed before. The
//! session's times, the link's scope, IP and country, the client binding,
//! revocations and staleness are checked on every request as before. Safety of a
//! hit:
//! - an entry holds the whole credential string and a hit compares it in full,
//!   byte for byte, so a hit is exactly a credential that verified; the 128-bit
//!   map key (the credential's last 16 bytes, inside the session tag's encoding)
//!   is only an index;
//! - the entry holds the [`SessionBinding`] of the link's key id when it verified
//!   (algorithm, Ed25519 public key, session secret), and a hit requires the ring
//!   to hold an equal one now: a retired key, a rotated session secret or a key id
//!   reissued with other material misses and is checked in full;
//! - only credentials whose link and session tag verified are inserted, on their
//!   second request (a doorkeeper of one 8-byte slot per entry remembers the
//!   first, so credentials used once cost no entry), and the capacity is fixed
//!   (TinyUFO), as above.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntCounterVec, Opts};
use sha2::{Digest, Sha256};
use stile_token::{Algorithm, KeyRing, Reason, Session, SessionBinding, Token};
use tinyufo::TinyUfo;

/// One verified token: what a hit must match in full.
#[derive(Clone, Copy)]
pub struct Entry {
    /// SHA-256 of the decoded token (body and signature).
    digest: [u8; 32],
    /// The public key that verified it.
    public: [u8; 32],
}

impl core::fmt::Debug for Entry {
    /// Nothing of the token.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Entry").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for SessionEntry {
    /// The session id only, never the credential.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionEntry").field("session", &self.session.id()).finish_non_exhaustive()
    }
}

/// A bounded map of checks that passed, with its lookup counters: the
/// verified-signature cache ([`VerifiedCache`]) and the verified-session cache
/// ([`SessionCache`]). Cheap to share behind an `Arc`.
pub struct CheckCache<V> {
    map: Option<TinyUfo<u128, V>>,
    /// The doorkeeper, when entries are admitted on their second sighting only: a
    /// direct-mapped table of the upper halves of the last map keys offered (empty:
    /// admitted on the first).
    seen: Box<[AtomicU64]>,
    lookups: IntCounterVec,
    hits: IntCounter,
    misses: IntCounter,
}

/// A bounded cache of verified Ed25519 signatures.
pub type VerifiedCache = CheckCache<Entry>;

impl<V> core::fmt::Debug for CheckCache<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CheckCache")
            .field("enabled", &self.map.is_some())
            .field("hits", &self.hits.get())
            .field("misses", &self.misses.get())
            .finish()
    }
}

impl<V: Clone + Send + Sync + 'static> CheckCache<V> {
    /// At most `entries` entries (0 disables the cache), counted in the metric `name`
    /// with a `result` label.
    fn with_metric(entries: usize, doorkeeper: bool, name: &str, help: &str) -> CheckCache<V> {
        let lookups = IntCounterVec::new(Opts::new(name, help), &["result"]).expect("valid metric");
        let hits = lookups.with_label_values(&["hit"]);
        let misses = lookups.with_label_values(&["miss"]);
        let map = (entries > 0).then(|| TinyUfo::new(entries, entries));
        let slots = if doorkeeper && entries > 0 { entries.next_power_of_two() } else { 0 };
        let seen = (0..slots).map(|_| AtomicU64::new(0)).collect();
        CheckCache { map, seen, lookups, hits, misses }
    }

    /// Whether an entry for `index` may be inserted now: always without a
    /// doorkeeper; with one, when the same index was the last offered in its slot
    /// (its second sighting); the offer is remembered either way.
    fn admit(&self, index: u128) -> bool {
        if self.seen.is_empty() {
            return true;
        }
        let slot = &self.seen[(index as usize) & (self.seen.len() - 1)];
        let tag = ((index >> 64) as u64) | 1;
        slot.swap(tag, Ordering::Relaxed) == tag
    }

    /// The lookup counter (`…_lookups_total{result}`), for the edge's registry.
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
}

impl VerifiedCache {
    /// A cache of at most `entries` tokens; 0 disables it (every Ed25519 token is verified).
    pub fn new(entries: usize) -> VerifiedCache {
        CheckCache::with_metric(
            entries,
            false,
            "stile_edge_verified_cache_lookups_total",
            "Ed25519 signature checks by verified-signature cache result (hit: signature check skipped).",
        )
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

/// One verified session credential: what a hit must match in full, and its parse.
pub struct SessionEntry {
    /// The credential string as received.
    credential: Box<[u8]>,
    /// What the ring held for the link's key id when it verified.
    binding: SessionBinding,
    /// The parsed credential.
    session: Arc<Session>,
}

/// A bounded cache of verified session credentials.
pub type SessionCache = CheckCache<Arc<SessionEntry>>;

/// The map key of a credential: its last 16 bytes (the end of the session tag's
/// encoding, unpredictable for a credential that verified). `None` when shorter.
fn session_index(credential: &[u8]) -> Option<u128> {
    let tail = credential.len().checked_sub(16).map(|start| &credential[start..])?;
    Some(u128::from_le_bytes(tail.try_into().ok()?))
}

impl SessionCache {
    /// A cache of at most `entries` credentials; 0 disables it (every credential is
    /// parsed and verified).
    pub fn new(entries: usize) -> SessionCache {
        CheckCache::with_metric(
            entries,
            true,
            "stile_edge_session_cache_lookups_total",
            "Session credential checks by verified-session cache result (hit: parse, key, signature and session tag skipped).",
        )
    }

    /// The session parsed from exactly this credential when it verified, if the ring
    /// still holds an equal binding for its link's key id: its link's key and
    /// signature and its session tag then hold as they did. `None` (a miss, counted)
    /// otherwise, and always when the cache is disabled (not counted).
    #[inline]
    pub fn get(&self, credential: &str, ring: &KeyRing) -> Option<Arc<Session>> {
        let map = self.map.as_ref()?;
        let bytes = credential.as_bytes();
        if let Some(index) = session_index(bytes)
            && let Some(entry) = map.get(&index)
            && *entry.credential == *bytes
            && ring.session_binding(entry.session.link().key_id()).as_ref() == Some(&entry.binding)
        {
            self.hits.inc();
            return Some(Arc::clone(&entry.session));
        }
        self.misses.inc();
        None
    }

    /// Remembers a credential whose link (key and signature, or key under the session
    /// tag) and session tag have just verified against `ring`, the second time it is
    /// offered: a credential used once (a live playlist's, renewed on every fetch)
    /// costs the cache one atomic swap, not an entry. Callers insert nothing else.
    pub fn insert(&self, credential: &str, session: &Arc<Session>, ring: &KeyRing) {
        let (Some(map), Some(index)) = (&self.map, session_index(credential.as_bytes())) else {
            return;
        };
        let Some(binding) = ring.session_binding(session.link().key_id()) else {
            return;
        };
        if !self.admit(index) {
            return;
        }
        let entry = SessionEntry { credential: credential.as_bytes().into(), binding, session: Arc::clone(session) };
        map.put(index, Arc::new(entry), 1);
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

    /// docs/edge.md's "about 1.3 KiB" per verified-session entry: the parsed
    /// session, the entry, a typical 256-byte credential string, a doorkeeper slot, two `Arc` headers,
    /// plus TinyUFO's own bookkeeping (estimated at 150 bytes as above).
    #[test]
    fn a_session_entry_is_about_1_3_kib() {
        let bytes = std::mem::size_of::<Session>() + std::mem::size_of::<SessionEntry>() + 256 + 8 + 2 * 16 + 150;
        assert!((1200..=1400).contains(&bytes), "{bytes} bytes: update docs/edge.md and config.rs");
    }

    /// Unique verified sessions never hold more than the capacity.
    #[test]
    fn unique_sessions_stay_within_capacity() {
        let cache = SessionCache::new(8);
        let mut ring = KeyRing::new();
        ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
        let policy = stile_token::SessionPolicy { idle_secs: 60, max_secs: 600, bind_v4: 0, bind_v6: 0 };
        let link = Token::parse(&stile_token::sign_with_session(&claims(1, 7), Some(&policy), &ring).unwrap()).unwrap();
        let creds: Vec<String> = (0..64)
            .map(|i| stile_token::session::start(&link, stile_token::SessionId(i), 1_500, 60, None, &ring).unwrap())
            .collect();
        for c in &creds {
            let session = Arc::new(Session::parse(c).unwrap());
            cache.insert(c, &session, &ring);
            assert!(cache.get(c, &ring).is_none(), "admitted on the second offer only");
            cache.insert(c, &session, &ring);
        }
        let held = creds.iter().filter(|c| cache.get(c, &ring).is_some()).count();
        assert!((1..=8).contains(&held), "{held} entries held in a cache of 8");
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
