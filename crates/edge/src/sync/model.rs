//! The edge's copy of the control plane's state, as the sync stream builds it:
//! verifying keys with their secrets, revocations with their expiry, and the
//! applied version. Snapshots replace it, deltas extend it, each message all
//! or nothing; [`Model::to_state`] turns it into the immutable [`State`]
//! requests read, and the cache file is its [`StateFile`] form.
//!
//! Key retirement: a RETIRED key leaves the key ring at once (its secret is
//! forgotten), and the key revocation that comes with it stays in the
//! revocation set until it expires, so a token signed with a retired key is
//! denied `revoked` rather than `unknown_key` (the validator checks the key
//! revocations on the `unknown_key` path only).

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use stile_proto::v1 as pb;
use stile_token::{KeyRing, SecretKey, TokenId};

use crate::revocation::RevocationsBuilder;
use crate::state::{KeyEntry, Liveness, RevocationEntry, RevocationKind, State, StateError, StateFile};

/// The applied state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// Newest applied version; 0 before the first snapshot.
    pub version: u64,
    keys: BTreeMap<u32, SecretKey>,
    revocations: BTreeMap<(Kind, String), Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    TokenId,
    Subject,
    Prefix,
    Key,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    issued_before: Option<u64>,
    expires_at: u64,
}

/// A purge the edge must carry out (recorded until a cache exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purge {
    /// The log version that carried it.
    pub version: u64,
    /// Canonical path prefix.
    pub prefix: String,
}

impl Model {
    /// Replaces everything with a snapshot. Refuses (leaving the model as it
    /// was) a snapshot older than the applied version unless `reset` is set,
    /// and any malformed content. Returns the purges the edge had not seen.
    pub fn apply_snapshot(&mut self, s: &pb::Snapshot) -> Result<Vec<Purge>, String> {
        if s.version < self.version && !s.reset {
            return Err(format!("snapshot version {} is older than the applied version {}", s.version, self.version));
        }
        let mut next = Model { version: s.version, ..Model::default() };
        for k in &s.keys {
            let secret = SecretKey::from_slice(&k.secret)
                .ok_or_else(|| format!("key {}: secret must be 32 bytes, got {}", k.key_id, k.secret.len()))?;
            next.keys.insert(k.key_id, secret);
        }
        let mut purges = Vec::new();
        for r in &s.revocations {
            if let Some(p) = next.add_revocation(r)?
                && r.version > self.version
            {
                purges.push(p);
            }
        }
        *self = next;
        Ok(purges)
    }

    /// Applies the next delta. It must be exactly `version + 1`; older ones are
    /// duplicates and ignored (`Ok(None)`), anything else is refused.
    pub fn apply_delta(&mut self, d: &pb::Delta) -> Result<Option<Purge>, String> {
        let change = d.change.as_ref().ok_or("delta without a change")?;
        if change.version <= self.version {
            return Ok(None);
        }
        if change.version != self.version + 1 {
            return Err(format!("gap: delta {} after applied version {}", change.version, self.version));
        }
        let mut purge = None;
        match change.kind.as_ref().ok_or("change without a kind")? {
            pb::change::Kind::Revocation(r) => {
                // add_revocation checks before inserting. A purge is reported at the
                // version of the change that carried it, whatever the revocation says.
                purge = self.add_revocation(r)?.map(|p| Purge { version: change.version, ..p });
            }
            pb::change::Kind::Key(k) => match pb::KeyState::try_from(k.state) {
                Ok(pb::KeyState::Retired) => {
                    self.keys.remove(&k.key_id);
                }
                Ok(pb::KeyState::Pending | pb::KeyState::Active | pb::KeyState::VerifyOnly) => match &d.key {
                    Some(key) if key.key_id == k.key_id => {
                        let secret = SecretKey::from_slice(&key.secret).ok_or_else(|| {
                            format!("key {}: secret must be 32 bytes, got {}", key.key_id, key.secret.len())
                        })?;
                        self.keys.insert(k.key_id, secret);
                    }
                    Some(key) => return Err(format!("key change for {} carries key {}", k.key_id, key.key_id)),
                    None if self.keys.contains_key(&k.key_id) => {}
                    None => return Err(format!("key {} announced without its material", k.key_id)),
                },
                _ => return Err(format!("key {}: unknown state {}", k.key_id, k.state)),
            },
        }
        self.version = change.version;
        Ok(purge)
    }

    /// Drops revocations that expired before `now - leeway`: no token they
    /// match can still be valid, leeway included.
    pub fn prune(&mut self, now: u64, leeway: u64) -> usize {
        let before = now.saturating_sub(leeway);
        let n = self.revocations.len();
        self.revocations.retain(|_, e| e.expires_at == 0 || e.expires_at >= before);
        n - self.revocations.len()
    }

    /// The state requests are verified against.
    pub fn to_state(&self, fresh_at: u64, liveness: &Liveness) -> State {
        let mut keys = KeyRing::new();
        for (id, secret) in &self.keys {
            keys.insert(*id, secret);
        }
        let ids = self.revocations.keys().filter(|(k, _)| *k == Kind::TokenId).count();
        let mut b = RevocationsBuilder::with_capacity(ids);
        for ((kind, value), e) in &self.revocations {
            match kind {
                Kind::TokenId => {
                    if let Some(id) = TokenId::from_hex(value) {
                        b.token_id(id, e.expires_at);
                    }
                }
                Kind::Subject => {
                    b.subject(value, e.issued_before.unwrap_or(0));
                }
                Kind::Prefix => {
                    b.path(value, e.issued_before.unwrap_or(0));
                }
                Kind::Key => {
                    if let Ok(id) = value.parse() {
                        b.key(id);
                    }
                }
            }
        }
        State { version: self.version, keys, revocations: b.build(0), fresh_at, live: liveness.clone() }
    }

    /// The cache file form (the static state-file format).
    pub fn to_file(&self, generated_at: u64) -> StateFile {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        StateFile {
            version: self.version,
            generated_at: Some(generated_at),
            keys: self.keys.iter().map(|(id, s)| KeyEntry { id: *id, secret: b64.encode(s.expose()) }).collect(),
            revocations: self
                .revocations
                .iter()
                .map(|((kind, value), e)| RevocationEntry {
                    kind: match kind {
                        Kind::TokenId => RevocationKind::TokenId,
                        Kind::Subject => RevocationKind::Subject,
                        Kind::Prefix => RevocationKind::Prefix,
                        Kind::Key => RevocationKind::Key,
                    },
                    value: value.clone(),
                    issued_before: e.issued_before,
                    expires_at: e.expires_at,
                })
                .collect(),
        }
    }

    /// The model a cache file holds; checked like a state file.
    pub fn from_file(file: &StateFile, path: &Path) -> Result<Model, StateError> {
        let bad = |message: String| StateError::Invalid { path: path.to_owned(), message };
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let mut m = Model { version: file.version, ..Model::default() };
        for k in &file.keys {
            let raw = engine.decode(k.secret.trim()).map_err(|e| bad(format!("key {}: secret: {e}", k.id)))?;
            let secret = SecretKey::from_slice(&raw)
                .ok_or_else(|| bad(format!("key {}: secret must be 32 bytes, got {}", k.id, raw.len())))?;
            m.keys.insert(k.id, secret);
        }
        for (i, r) in file.revocations.iter().enumerate() {
            let kind = match r.kind {
                RevocationKind::TokenId => Kind::TokenId,
                RevocationKind::Subject => Kind::Subject,
                RevocationKind::Prefix => Kind::Prefix,
                RevocationKind::Key => Kind::Key,
            };
            let ok = match kind {
                Kind::TokenId => TokenId::from_hex(&r.value).is_some(),
                Kind::Subject => r.issued_before.is_some(),
                Kind::Prefix => r.issued_before.is_some() && stile_token::is_canonical(&r.value),
                Kind::Key => r.value.parse::<u32>().is_ok(),
            };
            if !ok {
                return Err(bad(format!("revocations[{i}]: invalid {:?} entry", r.kind)));
            }
            m.merge(kind, r.value.clone(), Entry { issued_before: r.issued_before, expires_at: r.expires_at });
        }
        Ok(m)
    }

    fn add_revocation(&mut self, r: &pb::Revocation) -> Result<Option<Purge>, String> {
        use pb::revocation_target::Target as T;
        let target = r.target.as_ref().and_then(|t| t.target.as_ref()).ok_or("revocation without a target")?;
        let exp = r.expires_at;
        let (kind, value, entry, purge) = match target {
            T::TokenId(hex) => {
                let id = TokenId::from_hex(hex).ok_or_else(|| format!("token id {hex:?} is not 16 hex digits"))?;
                (Kind::TokenId, format!("{:016x}", id.as_u64()), Entry { issued_before: None, expires_at: exp }, None)
            }
            T::Subject(s) => {
                if s.subject.is_empty() {
                    return Err("empty subject".into());
                }
                (
                    Kind::Subject,
                    s.subject.clone(),
                    Entry { issued_before: Some(s.issued_before), expires_at: exp },
                    None,
                )
            }
            T::PathPrefix(p) => {
                if !stile_token::is_canonical(&p.prefix) {
                    return Err(format!("prefix {:?} is not a canonical path", p.prefix));
                }
                let purge = p.purge.then(|| Purge { version: r.version, prefix: p.prefix.clone() });
                (Kind::Prefix, p.prefix.clone(), Entry { issued_before: Some(p.issued_before), expires_at: exp }, purge)
            }
            T::KeyId(id) => (Kind::Key, id.to_string(), Entry { issued_before: None, expires_at: exp }, None),
        };
        self.merge(kind, value, entry);
        Ok(purge)
    }

    fn merge(&mut self, kind: Kind, value: String, e: Entry) {
        use std::collections::btree_map::Entry as Slot;
        match self.revocations.entry((kind, value)) {
            Slot::Vacant(v) => {
                v.insert(e);
            }
            Slot::Occupied(mut o) => {
                let slot = o.get_mut();
                slot.issued_before = match (slot.issued_before, e.issued_before) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                // 0 means "never expires": it wins.
                slot.expires_at =
                    if slot.expires_at == 0 || e.expires_at == 0 { 0 } else { slot.expires_at.max(e.expires_at) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_rev(version: u64, hex: &str, expires_at: u64) -> pb::Revocation {
        pb::Revocation {
            version,
            target: Some(pb::RevocationTarget { target: Some(pb::revocation_target::Target::TokenId(hex.into())) }),
            expires_at,
            ..Default::default()
        }
    }

    fn delta(version: u64, kind: pb::change::Kind, key: Option<pb::EdgeKey>) -> pb::Delta {
        pb::Delta { change: Some(pb::Change { version, kind: Some(kind), ..Default::default() }), key }
    }

    fn key(id: u32) -> pb::EdgeKey {
        pb::EdgeKey { key_id: id, state: pb::KeyState::Pending.into(), secret: vec![id as u8; 32] }
    }

    fn key_change(id: u32, state: pb::KeyState) -> pb::change::Kind {
        pb::change::Kind::Key(pb::KeyChange { key_id: id, state: state.into() })
    }

    #[test]
    fn snapshots_never_go_back_unless_reset() {
        let mut m = Model::default();
        let snap = pb::Snapshot {
            version: 5,
            keys: vec![key(1)],
            revocations: vec![token_rev(4, "00000000000000ff", 0)],
            reset: false,
        };
        m.apply_snapshot(&snap).unwrap();
        assert_eq!(m.version, 5);
        let older = pb::Snapshot { version: 4, ..snap.clone() };
        assert!(m.apply_snapshot(&older).unwrap_err().contains("older"));
        assert_eq!(m.version, 5, "a refused snapshot changes nothing");
        m.apply_snapshot(&pb::Snapshot { reset: true, ..older }).unwrap();
        assert_eq!(m.version, 4);
    }

    #[test]
    fn deltas_apply_in_order_only() {
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 2, keys: vec![key(1)], ..Default::default() }).unwrap();
        let rev = |v| delta(v, pb::change::Kind::Revocation(token_rev(v, "0000000000000001", 10)), None);
        assert!(m.apply_delta(&rev(4)).unwrap_err().contains("gap"));
        m.apply_delta(&rev(3)).unwrap();
        assert_eq!(m.apply_delta(&rev(3)).unwrap(), None, "duplicates are ignored");
        assert_eq!(m.version, 3);
        // A key without material is refused; with it, it joins the ring; retired, it leaves.
        assert!(m.apply_delta(&delta(4, key_change(2, pb::KeyState::Pending), None)).is_err());
        assert_eq!(m.version, 3);
        m.apply_delta(&delta(4, key_change(2, pb::KeyState::Pending), Some(key(2)))).unwrap();
        m.apply_delta(&delta(5, key_change(2, pb::KeyState::Active), None)).unwrap();
        assert!(m.to_state(0, &Liveness::default()).keys.contains(2));
        m.apply_delta(&delta(6, key_change(1, pb::KeyState::Retired), None)).unwrap();
        let s = m.to_state(0, &Liveness::default());
        assert!(!s.keys.contains(1) && s.keys.contains(2));
        assert_eq!(s.version, 6);
    }

    #[test]
    fn purges_are_reported_and_expired_entries_pruned() {
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 1, ..Default::default() }).unwrap();
        let prefix = pb::Revocation {
            version: 2,
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::PathPrefix(pb::PathPrefixTarget {
                    prefix: "/vod/abc/".into(),
                    issued_before: 100,
                    purge: true,
                })),
            }),
            expires_at: 500,
            ..Default::default()
        };
        let p = m.apply_delta(&delta(2, pb::change::Kind::Revocation(prefix), None)).unwrap();
        assert_eq!(p, Some(Purge { version: 2, prefix: "/vod/abc/".into() }));
        m.apply_delta(&delta(3, pb::change::Kind::Revocation(token_rev(3, "0000000000000002", 1000)), None)).unwrap();
        assert_eq!(m.prune(600, 5), 1);
        assert_eq!(m.to_state(0, &Liveness::default()).revocations.len(), 1);
    }

    #[test]
    fn a_purge_carries_the_version_of_its_change() {
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 1, ..Default::default() }).unwrap();
        let purge = pb::Revocation {
            version: 99, // inconsistent with the change: the change's version wins
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::PathPrefix(pb::PathPrefixTarget {
                    prefix: "/vod/".into(),
                    issued_before: 1,
                    purge: true,
                })),
            }),
            ..Default::default()
        };
        let p = m.apply_delta(&delta(2, pb::change::Kind::Revocation(purge), None)).unwrap();
        assert_eq!(p.map(|p| p.version), Some(2));
    }

    #[test]
    fn the_cache_file_round_trips() {
        let mut m = Model::default();
        let revs = vec![token_rev(2, "00000000000000aa", 900)];
        m.apply_snapshot(&pb::Snapshot { version: 9, keys: vec![key(3)], revocations: revs, reset: false }).unwrap();
        let json = serde_json::to_string(&m.to_file(123)).unwrap();
        let file: StateFile = serde_json::from_str(&json).unwrap();
        assert_eq!(file.generated_at, Some(123));
        let back = Model::from_file(&file, Path::new("cache.json")).unwrap();
        assert_eq!(back.version, 9);
        assert_eq!(back.keys, m.keys);
        assert_eq!(back.revocations, m.revocations);
    }
}
