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

use hashbrown::HashMap;
use stile_token::{KeyId, Token, TokenId};

/// An immutable revocation set, built once per state version and shared by every request.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    // Token id (big-endian halves) → expiry (Unix s, saturated to u32; 0 = unknown).
    token_ids: HashMap<[u32; 2], u32>,
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
        if !self.token_ids.is_empty() && self.token_ids.contains_key(&split(token.token_id())) {
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

    /// Bytes held by the token-id table (for the ≤ 40 B/entry budget).
    pub fn token_id_table_bytes(&self) -> usize {
        self.token_ids.allocation_size()
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
            set: Revocations { token_ids: HashMap::with_capacity(token_ids), ..Revocations::default() },
        }
    }

    /// Revokes one token; `expires_at` (0 = unknown) is when the entry may be dropped.
    pub fn token_id(&mut self, id: TokenId, expires_at: u64) -> &mut Self {
        self.set.token_ids.insert(split(id), u32::try_from(expires_at).unwrap_or(u32::MAX));
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

    /// The set, without token-id entries that expired before `prune_before`.
    pub fn build(mut self, prune_before: u64) -> Revocations {
        self.set.token_ids.retain(|_, exp| *exp == 0 || u64::from(*exp) >= prune_before);
        self.set.token_ids.shrink_to_fit();
        self.set
    }
}

#[inline]
fn split(id: TokenId) -> [u32; 2] {
    let v = id.as_u64();
    [(v >> 32) as u32, v as u32]
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
