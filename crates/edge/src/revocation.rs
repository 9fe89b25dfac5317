//! The revocation set: which verified tokens the edge must still refuse.
//!
//! Four kinds, each answered in O(1) or O(path depth) without allocating:
//! - one token id — a hash map of `u64` ids (stored as `[u32; 2]` with a `u32`
//!   expiry, 12 bytes a slot, about 22 bytes an entry at 10 M entries);
//! - one subject, for tokens issued before T — a map keyed by subject;
//! - one path prefix or asset, for tokens issued before T — a map keyed by
//!   canonical path, probed once per ancestor of the request path;
//! - one key id — every token signed with it.
//!
//! Entries whose matching tokens can no longer be valid are dropped when the set
//! is built ([`RevocationsBuilder::build`]), so the set stays bounded by
//! revocation rate × maximum token lifetime.
//!
//! The token ids, millions of them in a large fleet, are a [`TokenIds`]: a
//! large table shared (`Arc`) by every state built from it plus a small table
//! of newer entries, so the sync client publishes a state after a delta in
//! time proportional to the recent entries, not to the whole set.

use std::sync::Arc;

use hashbrown::HashMap;
use stile_token::{KeyId, Token, TokenId};

/// An immutable revocation set, built once per state version and shared by every request.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    token_ids: TokenIds,
    // Subject → tokens issued strictly before this time are revoked.
    subjects: HashMap<Box<str>, u64>,
    // Canonical path (a prefix ending in `/`, or an exact path) → issued-before.
    paths: HashMap<Box<str>, u64>,
    // Revoked key ids; a handful at most.
    keys: Vec<KeyId>,
}

/// Sizes of the set, by kind, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevocationCounts {
    /// Token-id entries.
    pub token_ids: usize,
    /// Subject entries.
    pub subjects: usize,
    /// Path-prefix and asset entries.
    pub paths: usize,
    /// Key entries.
    pub keys: usize,
}

impl Revocations {
    /// Whether any revocation matches this verified token used for `canonical_path`.
    #[inline]
    pub fn is_revoked(&self, token: &Token, canonical_path: &str) -> bool {
        if !self.token_ids.is_empty() && self.token_ids.contains(token.token_id()) {
            return true;
        }
        if !self.keys.is_empty() && self.keys.contains(&token.key_id()) {
            return true;
        }
        let issued = token.issued_at();
        if !self.subjects.is_empty()
            && let Some(subject) = token.subject()
            && self.subjects.get(subject).is_some_and(|&before| issued < before)
        {
            return true;
        }
        if !self.paths.is_empty() && self.path_revoked(canonical_path, issued) {
            return true;
        }
        false
    }

    /// Whether a revocation matches a verified foreign link (`crate::foreign`) used for
    /// `canonical_path`: its vendor id (Akamai `id`, Media CDN `SessionID`) as a
    /// subject, or a path prefix. `issued` is the link's start (`st`, `Starts`) or 0,
    /// since foreign links carry no issue time: a subject or prefix revocation
    /// covers every such link that does not start after it.
    #[inline]
    pub(crate) fn foreign_revoked(&self, id: Option<&str>, issued: u64, canonical_path: &str) -> bool {
        if !self.subjects.is_empty()
            && let Some(id) = id
            && self.subjects.get(id).is_some_and(|&before| issued < before)
        {
            return true;
        }
        !self.paths.is_empty() && self.path_revoked(canonical_path, issued)
    }

    /// Whether every token of `key` is revoked (a retired key).
    #[inline]
    pub fn key_revoked(&self, key: KeyId) -> bool {
        self.keys.contains(&key)
    }

    /// Sizes by kind.
    pub fn counts(&self) -> RevocationCounts {
        RevocationCounts {
            token_ids: self.token_ids.len(),
            subjects: self.subjects.len(),
            paths: self.paths.len(),
            keys: self.keys.len(),
        }
    }

    /// Total entries.
    pub fn len(&self) -> usize {
        let c = self.counts();
        c.token_ids + c.subjects + c.paths + c.keys
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the token-id tables (for the ≤ 40 B/entry budget).
    pub fn token_id_table_bytes(&self) -> usize {
        self.token_ids.base.allocation_size() + self.token_ids.recent.allocation_size()
    }

    fn path_revoked(&self, path: &str, issued: u64) -> bool {
        let hit = |p: &str| self.paths.get(p).is_some_and(|&before| issued < before);
        if hit(path) {
            return true;
        }
        // Every ancestor prefix, `/` included: O(depth) probes, no allocation.
        path.bytes().enumerate().filter(|&(i, b)| b == b'/' && i + 1 < path.len()).any(|(i, _)| hit(&path[..=i]))
    }
}

/// Collects revocations, then builds a [`Revocations`] without the expired ones.
#[derive(Debug, Default)]
pub struct RevocationsBuilder {
    set: Revocations,
}

impl RevocationsBuilder {
    /// An empty builder with room for `token_ids` token-id entries.
    pub fn with_capacity(token_ids: usize) -> RevocationsBuilder {
        RevocationsBuilder {
            set: Revocations { token_ids: TokenIds::with_capacity(token_ids), ..Revocations::default() },
        }
    }

    /// A builder starting from these token ids (shared, not copied: the sync
    /// client's model keeps them between states).
    pub fn with_token_ids(token_ids: TokenIds) -> RevocationsBuilder {
        RevocationsBuilder { set: Revocations { token_ids, ..Revocations::default() } }
    }

    /// Revokes one token; `expires_at` (0 = unknown) is when the entry may be dropped.
    pub fn token_id(&mut self, id: TokenId, expires_at: u64) -> &mut Self {
        self.set.token_ids.insert(id, expires_at);
        self
    }

    /// Revokes every token of `subject` issued before `issued_before`.
    pub fn subject(&mut self, subject: &str, issued_before: u64) -> &mut Self {
        let e = self.set.subjects.entry(subject.into()).or_insert(0);
        *e = (*e).max(issued_before);
        self
    }

    /// Revokes every token issued before `issued_before`, for requests under a canonical
    /// prefix (ending in `/`) or for one exact canonical path.
    pub fn path(&mut self, canonical: &str, issued_before: u64) -> &mut Self {
        let e = self.set.paths.entry(canonical.into()).or_insert(0);
        *e = (*e).max(issued_before);
        self
    }

    /// Revokes every token signed with `key`.
    pub fn key(&mut self, key: KeyId) -> &mut Self {
        if !self.set.keys.contains(&key) {
            self.set.keys.push(key);
        }
        self
    }

    /// The set, without token-id entries that expired before `prune_before`
    /// (0: none dropped, and token ids given by [`Self::with_token_ids`] are
    /// left as they are, shared).
    pub fn build(mut self, prune_before: u64) -> Revocations {
        if prune_before > 0 {
            self.set.token_ids.prune(prune_before);
            self.set.token_ids.compact();
        }
        self.set
    }
}

/// Token-id revocations: id → expiry (Unix seconds saturated to `u32`, 0 =
/// never). Two tables: `base`, shared by every copy (cloning the set clones
/// an `Arc`), and `recent`, the entries added since `base` was built. Adding
/// goes to `recent`; once it holds more than an eighth of `base` (at least
/// 4096) the two are merged into a new `base`, so adding n entries
/// one batch at a time costs O(n) amortised, never O(set) per batch.
#[derive(Clone, Debug, Default)]
pub struct TokenIds {
    // Token id (big-endian halves) → expiry.
    base: Arc<HashMap<[u32; 2], u32>>,
    recent: HashMap<[u32; 2], u32>,
    /// Entries in both tables together (an id in both counts once).
    len: usize,
    /// No entry of `base` expires before this (0: unknown): pruning looks no further while it lies ahead.
    base_min_expiry: u32,
}

/// `recent` may hold this many entries whatever the size of `base`.
const RECENT_MIN: usize = 4_096;

impl TokenIds {
    /// Empty, with room for `n` entries in the shared table.
    pub fn with_capacity(n: usize) -> TokenIds {
        TokenIds { base: Arc::new(HashMap::with_capacity(n)), ..TokenIds::default() }
    }

    /// Whether `id` is revoked.
    #[inline]
    pub fn contains(&self, id: TokenId) -> bool {
        let k = split(id);
        self.recent.contains_key(&k) || self.base.contains_key(&k)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The expiry of `id`'s entry, if it has one.
    pub fn get(&self, id: TokenId) -> Option<u64> {
        let k = split(id);
        self.recent.get(&k).or_else(|| self.base.get(&k)).map(|&e| u64::from(e))
    }

    /// Revokes `id` until `expires_at` (0: never). Revoked already: the later
    /// expiry wins, and 0 beats any.
    pub fn insert(&mut self, id: TokenId, expires_at: u64) {
        let k = split(id);
        let expiry = u32::try_from(expires_at).unwrap_or(u32::MAX);
        let old = self.recent.get(&k).or_else(|| self.base.get(&k)).copied();
        let merged = match old {
            None => {
                self.len += 1;
                expiry
            }
            Some(0) => return,
            Some(_) if expiry == 0 => 0,
            Some(e) if e >= expiry => return,
            Some(_) => expiry,
        };
        self.recent.insert(k, merged);
        if self.recent.len() > RECENT_MIN.max(self.base.len() / 8) {
            self.compact();
        }
    }

    /// Adds entries known to be new and distinct (a snapshot's), straight to
    /// the shared table, which must not be shared yet; else one by one.
    pub fn extend_new(&mut self, entries: impl ExactSizeIterator<Item = (TokenId, u64)>) {
        let Some(base) = Arc::get_mut(&mut self.base).filter(|_| self.recent.is_empty()) else {
            for (id, expires_at) in entries {
                self.insert(id, expires_at);
            }
            return;
        };
        base.reserve(entries.len());
        for (id, expires_at) in entries {
            let expiry = u32::try_from(expires_at).unwrap_or(u32::MAX);
            let slot = base.entry(split(id)).or_insert_with(|| {
                self.len += 1;
                expiry
            });
            // A repeated id (not expected): merged as `insert` does.
            if *slot != expiry {
                *slot = if *slot == 0 || expiry == 0 { 0 } else { (*slot).max(expiry) };
            }
            if expiry != 0 && (self.base_min_expiry == 0 || expiry < self.base_min_expiry) {
                self.base_min_expiry = expiry;
            }
        }
    }

    /// Merges `recent` into a new shared table (copying it if a published
    /// state still holds it).
    pub fn compact(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let base = Arc::make_mut(&mut self.base);
        for (k, e) in self.recent.drain() {
            if e != 0 && (self.base_min_expiry == 0 || e < self.base_min_expiry) {
                self.base_min_expiry = e;
            }
            base.insert(k, e);
        }
    }

    /// Drops entries that expired before `before`; returns how many. The
    /// shared table is only walked (and copied, if shared) when an entry of it
    /// is due.
    pub fn prune(&mut self, before: u64) -> usize {
        let n = self.len;
        let due = |e: u32| e != 0 && u64::from(e) < before;
        self.recent.retain(|_, e| !due(*e));
        if self.base_min_expiry != 0 && u64::from(self.base_min_expiry) < before {
            let base = Arc::make_mut(&mut self.base);
            base.retain(|_, e| !due(*e));
            base.shrink_to_fit();
            self.base_min_expiry = base.values().copied().filter(|&e| e != 0).min().unwrap_or(0);
        }
        let recent = &self.recent;
        self.len = self.base.len() + recent.keys().filter(|k| !self.base.contains_key(*k)).count();
        n - self.len
    }

    /// Every entry: id and expiry (0: never), in no order.
    pub fn iter(&self) -> impl Iterator<Item = (TokenId, u64)> + '_ {
        let recent = &self.recent;
        let base = self.base.iter().filter(move |(k, _)| !recent.contains_key(*k));
        recent.iter().chain(base).map(|(k, &e)| (join(*k), u64::from(e)))
    }
}

impl PartialEq for TokenIds {
    fn eq(&self, other: &TokenIds) -> bool {
        self.len == other.len && self.iter().all(|(id, e)| other.get(id) == Some(e))
    }
}

impl Eq for TokenIds {}

#[inline]
fn split(id: TokenId) -> [u32; 2] {
    let v = id.as_u64();
    [(v >> 32) as u32, v as u32]
}

fn join(k: [u32; 2]) -> TokenId {
    TokenId::from_u64((u64::from(k[0]) << 32) | u64::from(k[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stile_token::{Claims, KEY_LEN, KeyRing, Scope, SecretKey};

    fn token(id: u64, key: u32, issued: u64, subject: Option<&str>) -> Token {
        let mut ring = KeyRing::new();
        ring.insert(key, &SecretKey::from_bytes([1; KEY_LEN]));
        let claims = Claims {
            key_id: key,
            token_id: TokenId::from_u64(id),
            issued_at: issued,
            not_before: None,
            expires_at: issued + 600,
            scope: Scope::parse("/vod/").unwrap(),
            ip: None,
            countries: None,
            subject: subject.map(Into::into),
            channel: None,
        };
        Token::parse(&stile_token::sign(&claims, &ring).unwrap()).unwrap()
    }

    #[test]
    fn each_kind_matches_what_it_should() {
        let mut b = RevocationsBuilder::default();
        b.token_id(TokenId::from_u64(42), 0).subject("alice", 1_000).path("/vod/abc/", 1_000).path("/vod/x.ts", 1_000);
        b.key(9);
        let r = b.build(0);
        let p = "/vod/other/seg.ts";
        assert!(r.is_revoked(&token(42, 1, 500, None), p));
        assert!(!r.is_revoked(&token(43, 1, 500, None), p));
        assert!(r.is_revoked(&token(1, 9, 500, None), p));
        assert!(r.is_revoked(&token(1, 1, 999, Some("alice")), p));
        assert!(!r.is_revoked(&token(1, 1, 1_000, Some("alice")), p), "issued at T is not before T");
        assert!(!r.is_revoked(&token(1, 1, 999, Some("bob")), p));
        assert!(r.is_revoked(&token(1, 1, 999, None), "/vod/abc/720p/seg1.ts"));
        assert!(r.is_revoked(&token(1, 1, 999, None), "/vod/abc/"));
        assert!(!r.is_revoked(&token(1, 1, 999, None), "/vod/abcd/seg.ts"), "prefixes match whole segments");
        assert!(!r.is_revoked(&token(1, 1, 1_001, None), "/vod/abc/seg.ts"));
        assert!(r.is_revoked(&token(1, 1, 999, None), "/vod/x.ts"));
        assert!(!r.is_revoked(&token(1, 1, 999, None), "/vod/x.tsx"));
        assert_eq!(r.counts(), RevocationCounts { token_ids: 1, subjects: 1, paths: 2, keys: 1 });
    }

    #[test]
    fn expired_token_ids_are_pruned() {
        let mut b = RevocationsBuilder::default();
        b.token_id(TokenId::from_u64(1), 100).token_id(TokenId::from_u64(2), 300);
        let r = b.build(200);
        assert_eq!(r.counts().token_ids, 1);
    }

    #[test]
    fn token_ids_merge_compact_and_prune() {
        let id = TokenId::from_u64;
        let mut t = TokenIds::with_capacity(4);
        t.extend_new([(id(1), 100), (id(2), 0), (id(3), 300)].into_iter());
        let shared = t.clone();
        t.insert(id(1), 50); // an earlier expiry does not shorten it
        t.insert(id(3), 400);
        t.insert(id(4), 200);
        assert_eq!((t.len(), t.get(id(1)), t.get(id(3)), t.get(id(2))), (4, Some(100), Some(400), Some(0)));
        assert_eq!(shared.get(id(3)), Some(300), "a published copy does not see later entries");
        assert!(!shared.contains(id(4)) && t.contains(id(4)));
        // Enough new entries make one shared table; the copy published before keeps its own.
        for i in 10..(RECENT_MIN as u64 + 20) {
            t.insert(id(i), 1_000);
        }
        assert!(t.recent.len() < RECENT_MIN, "compacted");
        assert_eq!(t.len(), 4 + RECENT_MIN + 10);
        assert_eq!(shared.len(), 3);
        // Pruning drops what expired before the horizon, from both tables, never 0 (never expires).
        t.insert(id(5), 150);
        assert_eq!(t.prune(250), 3, "1 (100), 4 (200), 5 (150)");
        assert!(t.contains(id(2)) && t.contains(id(3)) && !t.contains(id(1)));
        assert_eq!(t.iter().count(), t.len());
        assert_eq!(t.prune(250), 0);
        let mut again = TokenIds::default();
        for (i, e) in t.iter() {
            again.insert(i, e);
        }
        assert_eq!(again, t);
    }

    #[test]
    fn token_id_table_stays_within_budget() {
        let n = 100_000;
        let mut b = RevocationsBuilder::with_capacity(n);
        for i in 0..n as u64 {
            b.token_id(TokenId::from_u64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), 2_000_000_000);
        }
        let r = b.build(0);
        let per_entry = r.token_id_table_bytes() / n;
        assert!(per_entry <= 40, "{per_entry} bytes per entry");
    }
}
