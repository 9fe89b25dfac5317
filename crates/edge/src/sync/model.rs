//! The edge's copy of the control plane's state, as the sync stream builds it:
//! verifying keys (HMAC secrets, Ed25519 public keys), foreign keys (other
//! vendors' keys, as the state file's `foreign_keys` entries), revocations
//! with their expiry, and the applied version. Snapshots replace it, deltas extend it, each message all
//! or nothing; [`Model::apply_batch`] applies what arrived together, purely
//! (no I/O, no clock: the caller passes the time). [`Model::to_state`] turns
//! it into the immutable [`State`] requests read, and the cache file is its
//! [`StateFile`] form, read back through the one state-file codec
//! ([`StateFile::decode`]).
//!
//! A snapshot in parts (`SnapshotBegin`, `SnapshotChunk`s) is assembled
//! beside the applied state and replaces it only once its last chunk arrived
//! and every count matched; until then the applied state stays in force. Token
//! ids live in a [`TokenIds`] that the published states share, so a delta
//! costs a state build proportional to the recent entries, not to millions.
//!
//! Key retirement: a RETIRED key leaves the key ring at once (its secret is
//! forgotten), and the key revocation that comes with it stays in the
//! revocation set until it expires, so a token signed with a retired key is
//! denied `revoked` rather than `unknown_key` (the validator checks the key
//! revocations on the `unknown_key` path only).

use std::collections::BTreeMap;
use std::path::Path;

use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_token::{Ed25519Public, KeyId, KeyRing, SecretKey, TokenId, VerifyKey};

use super::image::CacheImage;
use crate::cache::PurgeTarget;
use crate::revocation::{RevocationsBuilder, TokenIds};
use crate::state::{
    ForeignKeyEntry, ForeignKeys, KeyEntry, Liveness, RevocationEntry, RevocationKind, State, StateError, StateFile,
    add_revocation, key_ring,
};

/// The applied state. Two models are equal when their applied states are
/// (a snapshot in parts still being received is not part of it).
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Newest applied version; 0 before the first snapshot.
    pub version: u64,
    keys: BTreeMap<KeyId, VerifyKey>,
    /// Foreign keys by (format, name), as pushed ...
    foreign: BTreeMap<(String, String), ForeignKeyEntry>,
    /// ... and decoded, as the state file's are ([`ForeignKeys::decode`]).
    foreign_keys: ForeignKeys,
    /// Revocations other than token ids.
    revocations: BTreeMap<(RevocationKind, String), Entry>,
    /// Token-id revocations (shared with the published states).
    tokens: TokenIds,
    /// A snapshot in parts being received (not applied yet).
    pending: Option<Box<Pending>>,
}

impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.version == other.version
            && self.keys == other.keys
            && self.foreign == other.foreign
            && self.revocations == other.revocations
            && self.tokens == other.tokens
    }
}

impl Eq for Model {}

/// A snapshot in parts, as far as it has arrived.
#[derive(Clone, Debug)]
struct Pending {
    /// What replaces the model once the last chunk arrived.
    next: Model,
    /// Whether the control plane said `reset`.
    reset: bool,
    /// The counts the begin announced, and what arrived so far.
    expected: Counts,
    got: Counts,
    /// Purges the edge had not seen, so far.
    purges: Vec<Purge>,
}

/// Entries of a snapshot in parts, by kind, and its chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    token_ids: u64,
    revocations: u64,
    purges: u64,
    chunks: u64,
}

/// Most token-id slots reserved ahead from a `SnapshotBegin`'s count (the
/// table grows past it as chunks arrive).
const RESERVE_MAX: u64 = 1 << 24;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    issued_before: Option<u64>,
    expires_at: u64,
}

/// A purge the edge must carry out on its cache (counted when it has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purge {
    /// The log version that carried it (for a snapshot's floor: the floor).
    pub version: u64,
    /// What it removes.
    pub target: PurgeTarget,
}

/// Why a sync message was refused (NACKed with this text): the model is left
/// as it was before the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A snapshot older than the applied version, without `reset`.
    #[error("snapshot version {got} is older than the applied version {applied}")]
    OlderSnapshot {
        /// The snapshot's version.
        got: u64,
        /// The applied version.
        applied: u64,
    },
    /// A delta beyond the next version.
    #[error("gap: delta {got} after applied version {applied}")]
    Gap {
        /// The delta's version.
        got: u64,
        /// The applied version.
        applied: u64,
    },
    /// A delta without its change.
    #[error("delta without a change")]
    NoChange,
    /// A change without its kind.
    #[error("change without a kind")]
    NoKind,
    /// Key material of the wrong length.
    #[error("key {id}: secret must be 32 bytes, got {len}")]
    SecretLength {
        /// The key id.
        id: KeyId,
        /// The length received.
        len: usize,
    },
    /// An Ed25519 key whose public key is not 32 bytes, not a curve point, or
    /// of small order; or that carries a secret (an edge never holds an
    /// Ed25519 private key).
    #[error("key {id}: {why}")]
    PublicKey {
        /// The key id.
        id: KeyId,
        /// What is wrong.
        why: String,
    },
    /// A key algorithm this edge does not know.
    #[error("key {id}: unknown algorithm {algorithm}")]
    Algorithm {
        /// The key id.
        id: KeyId,
        /// The algorithm's wire value.
        algorithm: i32,
    },
    /// A key change carrying another key's material.
    #[error("key change for {change} carries key {material}")]
    KeyMismatch {
        /// The key the change is about.
        change: KeyId,
        /// The key the material is for.
        material: KeyId,
    },
    /// A new key announced without its material.
    #[error("key {0} announced without its material")]
    NoMaterial(KeyId),
    /// Foreign keys the edge cannot load (unknown format, bad material, more
    /// than 8 of a format), or a foreign key change carrying another key.
    #[error("foreign keys: {0}")]
    Foreign(String),
    /// A key state this edge does not know.
    #[error("key {id}: unknown state {state}")]
    KeyState {
        /// The key id.
        id: KeyId,
        /// The state's wire value.
        state: i32,
    },
    /// A revocation without a target.
    #[error("revocation without a target")]
    NoTarget,
    /// A token id that is not 16 hex digits.
    #[error("token id {0:?} is not 16 hex digits")]
    TokenId(String),
    /// An empty subject.
    #[error("empty subject")]
    EmptySubject,
    /// A prefix that is not a canonical path.
    #[error("prefix {0:?} is not a canonical path")]
    NotCanonical(String),
    /// A purge without a target.
    #[error("purge without a target")]
    NoPurgeTarget,
    /// A purge prefix not ending in `/`, or a purge path ending in it.
    #[error("purge {0:?}: a prefix ends with '/', a path does not")]
    PurgeShape(String),
    /// A snapshot chunk that does not continue the snapshot being received
    /// (none begun, another version, or out of sequence).
    #[error("snapshot chunk {seq} of version {version} does not follow {expected}")]
    ChunkOrder {
        /// The chunk's version.
        version: u64,
        /// The chunk's sequence number.
        seq: u64,
        /// What was expected instead.
        expected: String,
    },
    /// Packed token ids not a multiple of 8 bytes, or not one expiry each.
    #[error("snapshot chunk: {ids} bytes of token ids with {expiries} expiries")]
    Packing {
        /// Bytes of ids.
        ids: usize,
        /// Expiries.
        expiries: usize,
    },
    /// An expiry past the end of time.
    #[error("snapshot chunk: token expiry overflows")]
    Expiry,
    /// The last chunk arrived but the counts differ from the begin's.
    #[error("snapshot {version} incomplete: {what}")]
    Incomplete {
        /// The snapshot's version.
        version: u64,
        /// What differs.
        what: String,
    },
}

/// What one batch did: [`Model::apply_batch`]'s report, from which the sync
/// client publishes, persists, ACKs, NACKs and answers heartbeats.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Something was applied (a duplicate delta counts: it is ACKed again);
    /// the state must be republished and the batch's version ACKed.
    pub changed: bool,
    /// A snapshot was applied (the cache must be rewritten whole before the ACK).
    pub snapshot: bool,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Deltas accepted (duplicates included).
    pub deltas: u64,
    /// Versions of snapshots applied with `reset` (the control plane's log was behind this edge).
    pub resets: Vec<u64>,
    /// The deltas that advanced the version after the batch's last snapshot, in
    /// order: what the journal must hold before the ACK. A snapshot empties it,
    /// since the whole file written for the snapshot supersedes what came before.
    pub journal: Vec<pb::Delta>,
    /// Purges the edge had not seen.
    pub purges: Vec<Purge>,
    /// The message refused, by version, and why; nothing after it in the batch was looked at.
    pub nack: Option<(u64, ApplyError)>,
    /// Heartbeats received before any refusal, in order.
    pub heartbeats: Vec<pb::Heartbeat>,
    /// Revocations pruned after applying.
    pub pruned: usize,
}

impl BatchOutcome {
    /// A whole snapshot (one message or the last of its parts) was applied.
    fn snapshot_applied(&mut self, version: u64, reset: bool, purges: Vec<Purge>) {
        if reset {
            self.resets.push(version);
        }
        self.snapshots += 1;
        self.journal.clear();
        self.purges.extend(purges);
        self.changed = true;
        self.snapshot = true;
    }
}

impl Model {
    /// Applies the messages that arrived together, in order, stopping at the
    /// first refused one. When anything was applied, revocations that expired
    /// before `prune_at - leeway` are pruned (`prune_at`: the earlier of the
    /// edge's and the control plane's clocks, see the sync client). Pure: the
    /// caller logs, counts, persists and answers from the outcome.
    pub fn apply_batch(&mut self, batch: Vec<pb::ControlMessage>, prune_at: u64, leeway: u64) -> BatchOutcome {
        let mut out = BatchOutcome::default();
        for msg in batch {
            match msg.kind {
                Some(Cm::Snapshot(s)) => match self.apply_snapshot(&s) {
                    Ok(purges) => out.snapshot_applied(s.version, s.reset, purges),
                    Err(e) => {
                        out.nack = Some((s.version, e));
                        break;
                    }
                },
                Some(Cm::SnapshotBegin(b)) => {
                    if let Err(e) = self.begin_snapshot(&b) {
                        out.nack = Some((b.version, e));
                        break;
                    }
                }
                Some(Cm::SnapshotChunk(c)) => match self.apply_chunk(&c) {
                    Ok(None) => {}
                    Ok(Some((purges, reset))) => out.snapshot_applied(c.version, reset, purges),
                    Err(e) => {
                        self.pending = None;
                        out.nack = Some((c.version, e));
                        break;
                    }
                },
                Some(Cm::Delta(d)) => {
                    // Nothing comes between a snapshot's parts: a delta ends one unfinished.
                    self.pending = None;
                    let v = d.change.as_ref().map_or(0, |c| c.version);
                    let before = self.version;
                    match self.apply_delta(&d) {
                        Ok(purge) => {
                            out.deltas += 1;
                            out.purges.extend(purge);
                            out.changed = true;
                            if self.version > before {
                                out.journal.push(d);
                            }
                        }
                        Err(e) => {
                            out.nack = Some((v, e));
                            break;
                        }
                    }
                }
                Some(Cm::Heartbeat(h)) => out.heartbeats.push(h),
                None => {}
            }
        }
        if out.changed {
            out.pruned = self.prune(prune_at, leeway);
        }
        out
    }

    /// Replaces everything with a snapshot. Refuses (leaving the model as it
    /// was) a snapshot older than the applied version unless `reset` is set,
    /// and any malformed content. Returns the purges the edge had not seen.
    pub fn apply_snapshot(&mut self, s: &pb::Snapshot) -> Result<Vec<Purge>, ApplyError> {
        if s.version < self.version && !s.reset {
            return Err(ApplyError::OlderSnapshot { got: s.version, applied: self.version });
        }
        let mut next = Model { version: s.version, ..Model::default() };
        for k in &s.keys {
            next.keys.insert(k.key_id, material(k)?);
        }
        next.set_foreign(foreign_entries(&s.foreign_keys))?;
        next.tokens = TokenIds::with_capacity(s.revocations.len());
        let mut purges = Vec::new();
        for r in &s.revocations {
            if let Some(p) = next.add_revocation(r)?
                && r.version > self.version
            {
                purges.push(p);
            }
        }
        next.tokens.compact();
        // Purges retained for a window: those after the version applied are new here.
        // A purge dropped from the window after it (the floor) cannot be named any
        // more, so the whole cache goes.
        if s.purge_floor > self.version {
            purges.push(Purge { version: s.purge_floor, target: PurgeTarget::All });
        }
        for p in &s.purges {
            let target = purge_target(p)?;
            if p.version > self.version {
                purges.push(Purge { version: p.version, target });
            }
        }
        *self = next;
        Ok(purges)
    }

    /// Starts a snapshot in parts (replacing one unfinished): checked like a
    /// [`Snapshot`](pb::Snapshot)'s version and keys; the model stays as it is.
    pub fn begin_snapshot(&mut self, b: &pb::SnapshotBegin) -> Result<(), ApplyError> {
        self.pending = None;
        if b.version < self.version && !b.reset {
            return Err(ApplyError::OlderSnapshot { got: b.version, applied: self.version });
        }
        let mut next = Model { version: b.version, ..Model::default() };
        for k in &b.keys {
            next.keys.insert(k.key_id, material(k)?);
        }
        next.set_foreign(foreign_entries(&b.foreign_keys))?;
        let reserve = b.token_ids.min(RESERVE_MAX);
        next.tokens = TokenIds::with_capacity(usize::try_from(reserve).unwrap_or(0));
        let mut purges = Vec::new();
        // As for a whole snapshot: a purge dropped from the window after the
        // applied version cannot be named any more, so the whole cache goes.
        if b.purge_floor > self.version {
            purges.push(Purge { version: b.purge_floor, target: PurgeTarget::All });
        }
        let expected =
            Counts { token_ids: b.token_ids, revocations: b.revocations, purges: b.purges, chunks: b.chunks };
        self.pending = Some(Box::new(Pending { next, reset: b.reset, expected, got: Counts::default(), purges }));
        Ok(())
    }

    /// Adds one chunk to the snapshot being received. The last one, when the
    /// counts match, replaces the model; returns its purges (those the edge
    /// had not seen) and whether it was a `reset`. Any error leaves the model
    /// as it was (the caller drops the unfinished snapshot).
    pub fn apply_chunk(&mut self, c: &pb::SnapshotChunk) -> Result<Option<(Vec<Purge>, bool)>, ApplyError> {
        let applied = self.version;
        let p = match self.pending.as_deref_mut() {
            Some(p) if p.next.version == c.version && p.got.chunks == c.seq => p,
            other => {
                let expected = other.map_or_else(
                    || "no snapshot begun".to_owned(),
                    |p| format!("chunk {} of version {}", p.got.chunks, p.next.version),
                );
                return Err(ApplyError::ChunkOrder { version: c.version, seq: c.seq, expected });
            }
        };
        if !c.token_ids.len().is_multiple_of(8) || c.token_ids.len() / 8 != c.token_expiry_deltas.len() {
            return Err(ApplyError::Packing { ids: c.token_ids.len(), expiries: c.token_expiry_deltas.len() });
        }
        let mut expiry = 0u64;
        let mut expiries = Vec::with_capacity(c.token_expiry_deltas.len());
        for d in &c.token_expiry_deltas {
            expiry = expiry.checked_add(*d).ok_or(ApplyError::Expiry)?;
            expiries.push(expiry);
        }
        let ids = c.token_ids.chunks_exact(8).map(|b| {
            let mut id = [0u8; 8];
            id.copy_from_slice(b);
            TokenId::from_u64(u64::from_be_bytes(id))
        });
        // Others first: a malformed one refuses the chunk before any token id is added.
        let mut purges = Vec::new();
        for r in &c.revocations {
            if matches!(
                r.target.as_ref().and_then(|t| t.target.as_ref()),
                Some(pb::revocation_target::Target::TokenId(_))
            ) {
                // Packed only: a token id among the others is counted apart and would not match.
                return Err(ApplyError::Packing { ids: 0, expiries: 0 });
            }
            if let Some(purge) = p.next.add_revocation(r)?
                && r.version > applied
            {
                purges.push(purge);
            }
        }
        for purge in &c.purges {
            let target = purge_target(purge)?;
            if purge.version > applied {
                purges.push(Purge { version: purge.version, target });
            }
        }
        p.next.tokens.extend_new(ids.zip(expiries));
        p.purges.extend(purges);
        p.got.token_ids += c.token_expiry_deltas.len() as u64;
        p.got.revocations += c.revocations.len() as u64;
        p.got.purges += c.purges.len() as u64;
        p.got.chunks += 1;
        if !c.last {
            return Ok(None);
        }
        if p.got != p.expected {
            let what = format!("announced {:?}, received {:?}", p.expected, p.got);
            return Err(ApplyError::Incomplete { version: c.version, what });
        }
        let Some(done) = self.pending.take() else { return Ok(None) };
        let Pending { next, reset, purges, .. } = *done;
        *self = next;
        Ok(Some((purges, reset)))
    }

    /// Forgets a snapshot in parts not received whole (its stream ended).
    pub fn abandon_snapshot(&mut self) {
        self.pending = None;
    }

    /// Applies the next delta. It must be exactly `version + 1`; older ones are
    /// duplicates and ignored (`Ok(None)`), anything else is refused.
    pub fn apply_delta(&mut self, d: &pb::Delta) -> Result<Option<Purge>, ApplyError> {
        let change = d.change.as_ref().ok_or(ApplyError::NoChange)?;
        if change.version <= self.version {
            return Ok(None);
        }
        if change.version != self.version + 1 {
            return Err(ApplyError::Gap { got: change.version, applied: self.version });
        }
        let mut purge = None;
        match change.kind.as_ref().ok_or(ApplyError::NoKind)? {
            pb::change::Kind::Revocation(r) => {
                // add_revocation checks before inserting. A purge is reported at the
                // version of the change that carried it, whatever the revocation says.
                purge = self.add_revocation(r)?.map(|p| Purge { version: change.version, ..p });
            }
            pb::change::Kind::Purge(p) => {
                purge = Some(Purge { version: change.version, target: purge_target(p)? });
            }
            pb::change::Kind::Key(k) => match pb::KeyState::try_from(k.state) {
                Ok(pb::KeyState::Retired) => {
                    self.keys.remove(&k.key_id);
                }
                Ok(pb::KeyState::Pending | pb::KeyState::Active | pb::KeyState::VerifyOnly) => match &d.key {
                    Some(key) if key.key_id == k.key_id => {
                        self.keys.insert(k.key_id, material(key)?);
                    }
                    Some(key) => return Err(ApplyError::KeyMismatch { change: k.key_id, material: key.key_id }),
                    None if self.keys.contains_key(&k.key_id) => {}
                    None => return Err(ApplyError::NoMaterial(k.key_id)),
                },
                _ => return Err(ApplyError::KeyState { id: k.key_id, state: k.state }),
            },
            pb::change::Kind::ForeignKey(f) => {
                let mut next = self.foreign.clone();
                let id = (f.format.clone(), f.name.clone());
                match &d.foreign_key {
                    _ if f.removed => {
                        next.remove(&id);
                    }
                    Some(k) if k.format == f.format && k.name == f.name => {
                        next.insert(
                            id,
                            ForeignKeyEntry { format: k.format.clone(), name: k.name.clone(), key: k.key.clone() },
                        );
                    }
                    Some(k) => {
                        let why = format!("change for {} {:?} carries {} {:?}", f.format, f.name, k.format, k.name);
                        return Err(ApplyError::Foreign(why));
                    }
                    // Removed since: nothing to apply, the removal follows.
                    None => {
                        next.remove(&id);
                    }
                }
                self.set_foreign(next)?;
            }
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
        n - self.revocations.len() + self.tokens.prune(before)
    }

    /// The state requests are verified against.
    pub fn to_state(&self, fresh_at: u64, liveness: &Liveness) -> State {
        let keys = key_ring(self.keys.iter().map(|(id, k)| (*id, k)));
        let mut b = RevocationsBuilder::with_token_ids(self.tokens.clone());
        for ((kind, value), e) in &self.revocations {
            add_revocation(&mut b, *kind, value, e.issued_before, e.expires_at);
        }
        State {
            version: self.version,
            keys,
            foreign_keys: self.foreign_keys.clone(),
            revocations: b.build(0),
            fresh_at,
            live: liveness.clone(),
        }
    }

    /// The cache file form (the static state-file format).
    pub fn to_file(&self, generated_at: u64) -> StateFile {
        self.to_image(generated_at).into_file()
    }

    /// The cache's binary form ([`CacheImage`]): the keys and the other
    /// revocations as a state file, the token ids apart (the table itself,
    /// shared: no copy of millions of entries on the receive loop).
    pub fn to_image(&self, generated_at: u64) -> CacheImage {
        CacheImage { head: self.head_file(generated_at), tokens: self.tokens.clone() }
    }

    /// The state file without the token-id revocations.
    fn head_file(&self, generated_at: u64) -> StateFile {
        let others = self.revocations.iter().map(|((kind, value), e)| RevocationEntry {
            kind: *kind,
            value: value.clone(),
            issued_before: e.issued_before,
            expires_at: e.expires_at,
        });
        StateFile {
            version: self.version,
            generated_at: Some(generated_at),
            keys: self.keys.iter().map(|(id, k)| KeyEntry::new(*id, k)).collect(),
            revocations: others.collect(),
            foreign_keys: self.foreign.values().cloned().collect(),
        }
    }

    /// The model a cache file holds; checked like a state file.
    pub fn from_file(file: &StateFile, path: &Path) -> Result<Model, StateError> {
        let decoded = file.decode(path)?;
        let mut m = Model { version: decoded.version, ..Model::default() };
        m.keys.extend(decoded.keys);
        m.foreign = foreign_map(file.foreign_keys.iter().cloned());
        m.foreign_keys = decoded.foreign_keys;
        for r in decoded.revocations {
            m.merge(r.kind, r.value, Entry { issued_before: r.issued_before, expires_at: r.expires_at });
        }
        Ok(m)
    }

    /// The model of a binary cache's head (no token ids in it) with these
    /// token ids.
    pub(crate) fn from_image(head: &StateFile, tokens: TokenIds, path: &Path) -> Result<Model, StateError> {
        let mut m = Model::from_file(head, path)?;
        if !m.tokens.is_empty() {
            let message = "sync cache: token ids in the head".to_owned();
            return Err(StateError::Invalid { path: path.to_owned(), message });
        }
        m.tokens = tokens;
        Ok(m)
    }

    /// Replaces the foreign keys, if they decode (else the model is unchanged).
    fn set_foreign(&mut self, entries: BTreeMap<(String, String), ForeignKeyEntry>) -> Result<(), ApplyError> {
        let list: Vec<ForeignKeyEntry> = entries.values().cloned().collect();
        self.foreign_keys = ForeignKeys::decode(&list).map_err(ApplyError::Foreign)?;
        self.foreign = entries;
        Ok(())
    }

    fn add_revocation(&mut self, r: &pb::Revocation) -> Result<Option<Purge>, ApplyError> {
        let entry = RevocationEntry::try_from(r)?;
        let purge = match r.target.as_ref().and_then(|t| t.target.as_ref()) {
            Some(pb::revocation_target::Target::PathPrefix(p)) if p.purge => {
                Some(Purge { version: r.version, target: PurgeTarget::from_prefix(&p.prefix) })
            }
            _ => None,
        };
        let e = Entry { issued_before: entry.issued_before, expires_at: entry.expires_at };
        self.merge(entry.kind, entry.value, e);
        Ok(purge)
    }

    fn merge(&mut self, kind: RevocationKind, value: String, e: Entry) {
        use std::collections::btree_map::Entry as Slot;
        if kind == RevocationKind::TokenId {
            // Checked (and in lower case) by whoever made the entry.
            if let Some(id) = TokenId::from_hex(&value) {
                self.tokens.insert(id, e.expires_at);
            }
            return;
        }
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

/// A control-plane revocation as a state-file entry (checked, token id in
/// lower case): how the sync stream's revocations and the ones `stile explain`
/// fetches become the edge's own.
impl TryFrom<&pb::Revocation> for RevocationEntry {
    type Error = ApplyError;

    fn try_from(r: &pb::Revocation) -> Result<RevocationEntry, ApplyError> {
        use pb::revocation_target::Target as T;
        let target = r.target.as_ref().and_then(|t| t.target.as_ref()).ok_or(ApplyError::NoTarget)?;
        let (kind, value, issued_before) = match target {
            T::TokenId(hex) => {
                let id = TokenId::from_hex(hex).ok_or_else(|| ApplyError::TokenId(hex.clone()))?;
                (RevocationKind::TokenId, id.to_string(), None)
            }
            T::Subject(s) => {
                if s.subject.is_empty() {
                    return Err(ApplyError::EmptySubject);
                }
                (RevocationKind::Subject, s.subject.clone(), Some(s.issued_before))
            }
            T::PathPrefix(p) => {
                if !stile_token::is_canonical(&p.prefix) {
                    return Err(ApplyError::NotCanonical(p.prefix.clone()));
                }
                (RevocationKind::Prefix, p.prefix.clone(), Some(p.issued_before))
            }
            T::KeyId(id) => (RevocationKind::Key, id.to_string(), None),
        };
        Ok(RevocationEntry { kind, value, issued_before, expires_at: r.expires_at })
    }
}

/// A purge's target, checked like a revocation's prefix: canonical, and a
/// prefix ends with `/` while a path does not.
fn purge_target(p: &pb::Purge) -> Result<PurgeTarget, ApplyError> {
    use pb::purge_target::Target as T;
    let (path, prefix) = match p.target.as_ref().and_then(|t| t.target.as_ref()) {
        Some(T::Prefix(path)) => (path, true),
        Some(T::Path(path)) => (path, false),
        None => return Err(ApplyError::NoPurgeTarget),
    };
    if !stile_token::is_canonical(path) {
        return Err(ApplyError::NotCanonical(path.clone()));
    }
    match (prefix, path.ends_with('/')) {
        (true, true) => Ok(PurgeTarget::Prefix(path.clone())),
        (false, false) => Ok(PurgeTarget::Path(path.clone())),
        _ => Err(ApplyError::PurgeShape(path.clone())),
    }
}

/// Pushed foreign keys as state-file entries, by (format, name).
fn foreign_entries(keys: &[pb::ForeignKey]) -> BTreeMap<(String, String), ForeignKeyEntry> {
    foreign_map(keys.iter().map(|k| ForeignKeyEntry {
        format: k.format.clone(),
        name: k.name.clone(),
        key: k.key.clone(),
    }))
}

fn foreign_map(entries: impl Iterator<Item = ForeignKeyEntry>) -> BTreeMap<(String, String), ForeignKeyEntry> {
    entries.map(|e| ((e.format.clone(), e.name.clone()), e)).collect()
}

/// The material of a pushed key: an HMAC secret, or an Ed25519 public key
/// (checked as a ring checks it; a pushed Ed25519 key with a secret is refused).
fn material(k: &pb::EdgeKey) -> Result<VerifyKey, ApplyError> {
    let id = k.key_id;
    match pb::KeyAlgorithm::try_from(k.algorithm) {
        Ok(pb::KeyAlgorithm::Unspecified | pb::KeyAlgorithm::HmacSha256) => SecretKey::from_slice(&k.secret)
            .map(VerifyKey::Hmac)
            .ok_or(ApplyError::SecretLength { id, len: k.secret.len() }),
        Ok(pb::KeyAlgorithm::Ed25519) => {
            if !k.secret.is_empty() {
                return Err(ApplyError::PublicKey { id, why: "an Ed25519 key must not carry a secret".into() });
            }
            let public = Ed25519Public::from_slice(&k.public_key).ok_or_else(|| ApplyError::PublicKey {
                id,
                why: format!("public key must be 32 bytes, got {}", k.public_key.len()),
            })?;
            KeyRing::new().insert_ed25519(id, &public).map_err(|e| ApplyError::PublicKey { id, why: e.to_string() })?;
            // Sessions (docs/sessions.md): the key's session secret, when pushed.
            match k.session_secret.len() {
                0 => Ok(VerifyKey::Ed25519(public)),
                _ => SecretKey::from_slice(&k.session_secret)
                    .map(|s| VerifyKey::Ed25519Session(public, s))
                    .ok_or(ApplyError::SecretLength { id, len: k.session_secret.len() }),
            }
        }
        Err(_) => Err(ApplyError::Algorithm { id, algorithm: k.algorithm }),
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
        pb::Delta {
            change: Some(pb::Change { version, kind: Some(kind), ..Default::default() }),
            key,
            foreign_key: None,
        }
    }

    fn key(id: u32) -> pb::EdgeKey {
        pb::EdgeKey {
            key_id: id,
            state: pb::KeyState::Pending.into(),
            secret: vec![id as u8; 32],
            ..Default::default()
        }
    }

    fn key_change(id: u32, state: pb::KeyState) -> pb::change::Kind {
        pb::change::Kind::Key(pb::KeyChange { key_id: id, state: state.into(), ..Default::default() })
    }

    fn ed_key(id: u32, public: &[u8]) -> pb::EdgeKey {
        pb::EdgeKey {
            key_id: id,
            state: pb::KeyState::Pending.into(),
            algorithm: pb::KeyAlgorithm::Ed25519.into(),
            public_key: public.to_vec(),
            ..Default::default()
        }
    }

    /// Ed25519 keys arrive as public keys and verify; one with a secret, a bad
    /// public key or an unknown algorithm is NACKed and changes nothing; the cache
    /// file holds the public key and reads back the same.
    #[test]
    fn ed25519_keys_are_public_keys_only() {
        let public = stile_token::Ed25519Secret::from_bytes([4; 32]).public();
        let mut m = Model::default();
        let snap = pb::Snapshot { version: 3, keys: vec![key(1), ed_key(2, public.as_bytes())], ..Default::default() };
        m.apply_snapshot(&snap).unwrap();
        let state = m.to_state(0, &Liveness::default());
        assert_eq!(state.keys.ed25519_public(2), Some(public));
        let file = m.to_file(7);
        let json = serde_json::to_string(&file).unwrap();
        assert!(json.contains(r#""algorithm":"ed25519","public_key":"#) && !json.contains("\"secret\":null"), "{json}");
        assert_eq!(Model::from_file(&file, Path::new("c.json")).unwrap(), m);
        let before = m.clone();
        let with_secret = pb::EdgeKey { secret: vec![9; 32], ..ed_key(3, public.as_bytes()) };
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let unknown = pb::EdgeKey { algorithm: 7, ..key(3) };
        for (material, needle) in [
            (with_secret, "must not carry a secret"),
            (ed_key(3, &identity), "small order"),
            (ed_key(3, &[5; 31]), "32 bytes, got 31"),
            (unknown, "unknown algorithm 7"),
        ] {
            let d = delta(4, key_change(3, pb::KeyState::Pending), Some(material));
            let err = m.apply_delta(&d).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert_eq!(m, before, "a refused delta changes nothing");
        }
        m.apply_delta(&delta(4, key_change(3, pb::KeyState::Pending), Some(ed_key(3, public.as_bytes())))).unwrap();
        assert_eq!(m.to_state(0, &Liveness::default()).keys.algorithm(3), Some(stile_token::Algorithm::Ed25519));
    }

    #[test]
    fn snapshots_never_go_back_unless_reset() {
        let mut m = Model::default();
        let snap = pb::Snapshot {
            version: 5,
            keys: vec![key(1)],
            revocations: vec![token_rev(4, "00000000000000ff", 0)],
            ..Default::default()
        };
        m.apply_snapshot(&snap).unwrap();
        assert_eq!(m.version, 5);
        let older = pb::Snapshot { version: 4, ..snap.clone() };
        assert_eq!(m.apply_snapshot(&older).unwrap_err(), ApplyError::OlderSnapshot { got: 4, applied: 5 });
        assert_eq!(m.version, 5, "a refused snapshot changes nothing");
        m.apply_snapshot(&pb::Snapshot { reset: true, ..older }).unwrap();
        assert_eq!(m.version, 4);
    }

    #[test]
    fn deltas_apply_in_order_only() {
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 2, keys: vec![key(1)], ..Default::default() }).unwrap();
        let rev = |v| delta(v, pb::change::Kind::Revocation(token_rev(v, "0000000000000001", 10)), None);
        assert_eq!(m.apply_delta(&rev(4)).unwrap_err(), ApplyError::Gap { got: 4, applied: 2 });
        m.apply_delta(&rev(3)).unwrap();
        assert_eq!(m.apply_delta(&rev(3)).unwrap(), None, "duplicates are ignored");
        assert_eq!(m.version, 3);
        // A key without material is refused; with it, it joins the ring; retired, it leaves.
        let bare = delta(4, key_change(2, pb::KeyState::Pending), None);
        assert_eq!(m.apply_delta(&bare).unwrap_err(), ApplyError::NoMaterial(2));
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
        assert_eq!(p, Some(Purge { version: 2, target: PurgeTarget::Prefix("/vod/abc/".into()) }));
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

    fn purge(version: u64, target: pb::purge_target::Target) -> pb::Purge {
        pb::Purge { version, target: Some(pb::PurgeTarget { target: Some(target) }), ..Default::default() }
    }

    #[test]
    fn purge_changes_are_checked_and_revoke_nothing() {
        use pb::purge_target::Target as T;
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 1, keys: vec![key(1)], ..Default::default() }).unwrap();
        let before = m.to_state(0, &Liveness::default());
        let change = |v, t| delta(v, pb::change::Kind::Purge(purge(v, t)), None);
        let p = m.apply_delta(&change(2, T::Prefix("/vod/abc/".into()))).unwrap();
        assert_eq!(p, Some(Purge { version: 2, target: PurgeTarget::Prefix("/vod/abc/".into()) }));
        let p = m.apply_delta(&change(3, T::Path("/vod/abc/v1/seg3.ts".into()))).unwrap();
        assert_eq!(p, Some(Purge { version: 3, target: PurgeTarget::Path("/vod/abc/v1/seg3.ts".into()) }));
        assert_eq!(m.apply_delta(&change(3, T::Path("/x".into()))).unwrap(), None, "a duplicate purges nothing");
        assert_eq!(m.version, 3);
        let after = m.to_state(0, &Liveness::default());
        assert_eq!(after.revocations.len(), before.revocations.len(), "a purge revokes nothing");

        // Malformed purges are refused and change nothing.
        for (t, err) in [
            (T::Prefix("/vod/abc".into()), ApplyError::PurgeShape("/vod/abc".into())),
            (T::Path("/vod/abc/".into()), ApplyError::PurgeShape("/vod/abc/".into())),
            (T::Prefix("/vod/../x/".into()), ApplyError::NotCanonical("/vod/../x/".into())),
            (T::Path("vod/x.ts".into()), ApplyError::NotCanonical("vod/x.ts".into())),
        ] {
            assert_eq!(m.apply_delta(&change(4, t)).unwrap_err(), err);
        }
        let bare = delta(4, pb::change::Kind::Purge(pb::Purge { version: 4, ..Default::default() }), None);
        assert_eq!(m.apply_delta(&bare).unwrap_err(), ApplyError::NoPurgeTarget);
        assert_eq!(m.version, 3);
    }

    #[test]
    fn a_snapshot_reports_the_purges_after_the_applied_version_and_the_floor() {
        use pb::purge_target::Target as T;
        let snap = |version, floor, reset| pb::Snapshot {
            version,
            keys: vec![key(1)],
            purges: vec![purge(4, T::Prefix("/vod/a/".into())), purge(7, T::Path("/vod/b/seg1.ts".into()))],
            purge_floor: floor,
            reset,
            ..Default::default()
        };
        // Applied 5: purge 7 is new, 4 was seen, the floor (3) is below what was applied.
        let mut m = Model { version: 5, ..Model::default() };
        let purges = m.apply_snapshot(&snap(9, 3, false)).unwrap();
        assert_eq!(purges, [Purge { version: 7, target: PurgeTarget::Path("/vod/b/seg1.ts".into()) }]);
        // Applied 2: a purge dropped from the window (3) may have been missed: everything goes.
        let mut m = Model { version: 2, ..Model::default() };
        let purges = m.apply_snapshot(&snap(9, 3, false)).unwrap();
        assert_eq!(
            purges.iter().map(|p| (p.version, p.target.label())).collect::<Vec<_>>(),
            [(3, "all"), (4, "prefix"), (7, "path")]
        );
        // A reset snapshot (the control plane is behind): this edge saw that history.
        let mut m = Model { version: 20, ..Model::default() };
        assert!(m.apply_snapshot(&snap(9, 3, true)).unwrap().is_empty());
        // A malformed purge refuses the whole snapshot.
        let mut bad = snap(9, 0, false);
        bad.purges.push(purge(8, T::Prefix("/no-slash".into())));
        let mut m = Model { version: 5, ..Model::default() };
        assert_eq!(m.apply_snapshot(&bad).unwrap_err(), ApplyError::PurgeShape("/no-slash".into()));
        assert_eq!(m.version, 5);
    }

    fn msg(kind: Cm) -> pb::ControlMessage {
        pb::ControlMessage { kind: Some(kind) }
    }

    #[test]
    fn a_batch_applies_in_order_and_stops_at_the_first_refusal() {
        let mut m = Model::default();
        let rev = |v, hex, exp| delta(v, pb::change::Kind::Revocation(token_rev(v, hex, exp)), None);
        let heartbeat = pb::Heartbeat { cp_time_ms: 1, current_version: 3, seq: 7, rtt_ms: 0 };
        let batch = vec![
            msg(Cm::Snapshot(pb::Snapshot { version: 1, keys: vec![key(1)], ..Default::default() })),
            msg(Cm::Delta(rev(2, "0000000000000001", 50))),
            msg(Cm::Delta(rev(2, "0000000000000001", 50))), // a duplicate: accepted, not journaled
            msg(Cm::Heartbeat(heartbeat)),
            msg(Cm::Delta(rev(3, "0000000000000002", 5_000))),
            msg(Cm::Delta(rev(5, "0000000000000003", 5_000))), // a gap: refused, the rest unread
            msg(Cm::Heartbeat(heartbeat)),
        ];
        let out = m.apply_batch(batch, 100, 5);
        assert!(out.changed && out.snapshot);
        assert_eq!((out.snapshots, out.deltas, out.pruned), (1, 3, 1), "revocation 1 expired before 100 - 5");
        assert_eq!(out.journal.iter().map(|d| d.change.as_ref().unwrap().version).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(out.nack, Some((5, ApplyError::Gap { got: 5, applied: 3 })));
        assert_eq!(out.heartbeats, [heartbeat], "nothing after the refusal is looked at");
        assert_eq!(m.version, 3);
        assert_eq!(m.to_state(0, &Liveness::default()).revocations.len(), 1);

        // Only heartbeats: nothing changes, nothing is pruned.
        let before = m.clone();
        let out = m.apply_batch(vec![msg(Cm::Heartbeat(pb::Heartbeat::default()))], u64::MAX, 0);
        assert!(!out.changed && out.nack.is_none() && out.heartbeats.len() == 1);
        assert_eq!(m, before);
    }

    #[test]
    fn a_snapshot_starts_the_journal_again() {
        // Found by the sync_apply fuzz target: deltas journaled before a snapshot
        // in the same batch are covered by the snapshot's whole-file write, and
        // left in the journal they would sit next to later versions with a gap.
        let mut m = Model::default();
        let rev = |v, hex| delta(v, pb::change::Kind::Revocation(token_rev(v, hex, u64::MAX)), None);
        let batch = vec![
            msg(Cm::Snapshot(pb::Snapshot { version: 1, keys: vec![key(1)], ..Default::default() })),
            msg(Cm::Delta(rev(2, "0000000000000001"))),
            msg(Cm::Snapshot(pb::Snapshot { version: 7, keys: vec![key(1)], ..Default::default() })),
            msg(Cm::Delta(rev(8, "0000000000000002"))),
            msg(Cm::Delta(rev(9, "0000000000000003"))),
        ];
        let out = m.apply_batch(batch, 0, 5);
        assert!(out.snapshot && out.nack.is_none());
        assert_eq!(out.journal.iter().map(|d| d.change.as_ref().unwrap().version).collect::<Vec<_>>(), [8, 9]);
        assert_eq!(m.version, 9);
    }

    #[test]
    fn the_cache_file_round_trips() {
        let mut m = Model::default();
        let revs = vec![token_rev(2, "00000000000000aa", 900)];
        m.apply_snapshot(&pb::Snapshot { version: 9, keys: vec![key(3)], revocations: revs, ..Default::default() })
            .unwrap();
        let json = serde_json::to_string(&m.to_file(123)).unwrap();
        let file: StateFile = serde_json::from_str(&json).unwrap();
        assert_eq!(file.generated_at, Some(123));
        let back = Model::from_file(&file, Path::new("cache.json")).unwrap();
        assert_eq!(back.version, 9);
        assert_eq!(back.keys, m.keys);
        assert_eq!(back.revocations, m.revocations);
        assert_eq!(back.tokens, m.tokens);
        assert_eq!(back.tokens.len(), 1);
    }

    fn fkey(format: &str, name: &str, key: &str) -> pb::ForeignKey {
        pb::ForeignKey { format: format.into(), name: name.into(), key: key.into() }
    }

    fn fchange(version: u64, name: &str, removed: bool, material: Option<pb::ForeignKey>) -> pb::Delta {
        let change = pb::ForeignKeyChange { format: "bunny".into(), name: name.into(), removed };
        pb::Delta { foreign_key: material, ..delta(version, pb::change::Kind::ForeignKey(change), None) }
    }

    #[test]
    fn foreign_keys_come_and_go_and_reach_the_state_and_the_cache() {
        let live = Liveness::default();
        let mut m = Model::default();
        let s =
            pb::Snapshot { version: 1, foreign_keys: vec![fkey("akamai", "primary", "52a1")], ..Default::default() };
        m.apply_snapshot(&s).unwrap();
        assert_eq!(m.to_state(0, &live).foreign_keys.len(), 1);
        // Added with its material; a change carrying another key, or bad material, is refused whole.
        let wrong = fchange(2, "zone", false, Some(fkey("bunny", "other", "k")));
        assert!(matches!(m.apply_delta(&wrong), Err(ApplyError::Foreign(_))));
        let bad = fchange(2, "zone", false, Some(fkey("bunny", "zone", "ed25519:AAAA")));
        let err = m.apply_delta(&bad).unwrap_err();
        assert!(err.to_string().contains("Media CDN's only"), "{err}");
        assert_eq!(m.version, 1);
        m.apply_delta(&fchange(2, "zone", false, Some(fkey("bunny", "zone", "security-key")))).unwrap();
        let state = m.to_state(0, &live);
        assert_eq!(state.foreign_keys.get(stile_foreign::Format::Bunny).len(), 1);
        assert_eq!(state.foreign_keys.len(), 2);
        // The cache file keeps them, and reads back to the same model.
        let file = m.to_file(5);
        assert_eq!(file.foreign_keys.len(), 2);
        let json = serde_json::to_string(&file).unwrap();
        let back = Model::from_file(&serde_json::from_str(&json).unwrap(), Path::new("cache.json")).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_state(0, &live).foreign_keys.len(), 2);
        // Removed; an addition whose key is gone by now (no material) applies nothing.
        m.apply_delta(&fchange(3, "zone", true, None)).unwrap();
        m.apply_delta(&fchange(4, "later", false, None)).unwrap();
        assert_eq!((m.version, m.to_state(0, &live).foreign_keys.len()), (4, 1));
        // A snapshot replaces them all.
        m.apply_snapshot(&pb::Snapshot { version: 5, ..Default::default() }).unwrap();
        assert!(m.to_state(0, &live).foreign_keys.is_empty());
        assert!(m.to_file(6).foreign_keys.is_empty());
    }

    /// A snapshot in parts: a begin, then chunks of packed token ids (sorted by
    /// expiry, differences) and other entries.
    fn parts(version: u64, tokens: &[(u64, u64)], per_chunk: usize) -> Vec<pb::ControlMessage> {
        let mut sorted = tokens.to_vec();
        sorted.sort_by_key(|&(id, e)| (e, id));
        let pieces: Vec<&[(u64, u64)]> = if sorted.is_empty() { vec![&[]] } else { sorted.chunks(per_chunk).collect() };
        let mut out = vec![msg(Cm::SnapshotBegin(pb::SnapshotBegin {
            version,
            keys: vec![key(1)],
            token_ids: tokens.len() as u64,
            revocations: 1,
            chunks: pieces.len() as u64,
            ..Default::default()
        }))];
        for (seq, piece) in pieces.iter().enumerate() {
            let mut previous = 0;
            let chunk = pb::SnapshotChunk {
                version,
                seq: seq as u64,
                token_ids: piece.iter().flat_map(|(id, _)| id.to_be_bytes()).collect(),
                token_expiry_deltas: piece
                    .iter()
                    .map(|&(_, e)| {
                        let d = e - previous;
                        previous = e;
                        d
                    })
                    .collect(),
                revocations: if seq == 0 {
                    vec![pb::Revocation {
                        version: 1,
                        target: Some(pb::RevocationTarget {
                            target: Some(pb::revocation_target::Target::Subject(pb::SubjectTarget {
                                subject: "alice".into(),
                                issued_before: 10,
                            })),
                        }),
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                purges: vec![],
                last: seq + 1 == pieces.len(),
            };
            out.push(msg(Cm::SnapshotChunk(chunk)));
        }
        out
    }

    #[test]
    fn a_snapshot_in_parts_applies_only_when_complete() {
        let mut m = Model::default();
        m.apply_snapshot(&pb::Snapshot { version: 3, keys: vec![key(1)], ..Default::default() }).unwrap();
        m.apply_delta(&delta(4, pb::change::Kind::Revocation(token_rev(4, "00000000000000aa", 0)), None)).unwrap();
        let tokens: Vec<(u64, u64)> = (0..10).map(|i| (0x1000 + i, 5_000 - i % 3)).collect();
        let mut msgs = parts(9, &tokens, 4);
        assert_eq!(msgs.len(), 4, "begin and three chunks");
        let last = msgs.pop().unwrap();

        // Up to the last chunk nothing changes: the old state stays in force.
        let before = m.clone();
        let out = m.apply_batch(msgs, 0, 0);
        assert!(!out.changed && out.nack.is_none());
        assert_eq!((m.version, m.tokens.clone()), (before.version, before.tokens.clone()));
        let state = m.to_state(0, &Liveness::default());
        assert_eq!((state.version, state.revocations.len()), (4, 1));

        let out = m.apply_batch(vec![last], 0, 0);
        assert!(out.changed && out.snapshot && out.nack.is_none());
        assert_eq!((out.snapshots, m.version), (1, 9));
        let state = m.to_state(0, &Liveness::default());
        let c = state.revocations.counts();
        assert_eq!((c.token_ids, c.subjects), (10, 1), "the old revocation is gone, the snapshot's are in");
        assert_eq!(m.tokens.get(TokenId::from_u64(0x1001)), Some(4_999));
        assert!(!m.tokens.contains(TokenId::from_hex("00000000000000aa").unwrap()));

        // An empty snapshot is one begin and one last chunk.
        let out = m.apply_batch(parts(10, &[], 4), 0, 0);
        assert!(out.snapshot && m.tokens.is_empty() && m.version == 10);
    }

    #[test]
    fn a_broken_snapshot_in_parts_is_refused_whole() {
        let tokens: Vec<(u64, u64)> = (0..10).map(|i| (i + 1, 5_000)).collect();
        let base = {
            let mut m = Model::default();
            m.apply_snapshot(&pb::Snapshot { version: 3, keys: vec![key(1)], ..Default::default() }).unwrap();
            m
        };
        let chunk = |msgs: &mut Vec<pb::ControlMessage>, i: usize| -> pb::SnapshotChunk {
            match &mut msgs[i].kind {
                Some(Cm::SnapshotChunk(c)) => c.clone(),
                _ => unreachable!(),
            }
        };
        let check = |msgs: Vec<pb::ControlMessage>, want: ApplyError| {
            let mut m = base.clone();
            let out = m.apply_batch(msgs, 0, 0);
            assert_eq!(out.nack, Some((9, want)));
            assert!(!out.changed);
            assert_eq!(m, base, "the model stays as it was");
            assert!(m.pending.is_none(), "nothing pending");
        };
        // A chunk lost on the way: the next one is out of order.
        let mut msgs = parts(9, &tokens, 4);
        msgs.remove(2);
        check(msgs, ApplyError::ChunkOrder { version: 9, seq: 2, expected: "chunk 1 of version 9".into() });
        // A chunk without a begin.
        let mut msgs = parts(9, &tokens, 4);
        msgs.remove(0);
        check(msgs, ApplyError::ChunkOrder { version: 9, seq: 0, expected: "no snapshot begun".into() });
        // Fewer entries than announced.
        let mut msgs = parts(9, &tokens, 4);
        let mut c = chunk(&mut msgs, 3);
        c.token_ids.truncate(8);
        c.token_expiry_deltas.truncate(1);
        msgs[3] = msg(Cm::SnapshotChunk(c));
        let mut m = base.clone();
        let out = m.apply_batch(msgs, 0, 0);
        assert!(matches!(out.nack, Some((9, ApplyError::Incomplete { version: 9, .. }))), "{:?}", out.nack);
        assert_eq!(m, base);
        // Ids and expiries that do not pair up.
        let mut msgs = parts(9, &tokens, 4);
        let mut c = chunk(&mut msgs, 1);
        c.token_ids.truncate(c.token_ids.len() - 1);
        msgs[1] = msg(Cm::SnapshotChunk(c));
        check(msgs, ApplyError::Packing { ids: 31, expiries: 4 });
        // An expiry past u64.
        let mut msgs = parts(9, &tokens, 4);
        let mut c = chunk(&mut msgs, 1);
        c.token_expiry_deltas[1] = u64::MAX;
        msgs[1] = msg(Cm::SnapshotChunk(c));
        check(msgs, ApplyError::Expiry);
        // An older snapshot, without reset.
        let mut m = Model { version: 20, ..base.clone() };
        let out = m.apply_batch(parts(9, &tokens, 4), 0, 0);
        assert_eq!(out.nack, Some((9, ApplyError::OlderSnapshot { got: 9, applied: 20 })));
        // A delta in the middle abandons the snapshot; its remaining chunks are refused.
        let mut msgs = parts(9, &tokens, 4);
        msgs.insert(
            2,
            msg(Cm::Delta(delta(3, pb::change::Kind::Revocation(token_rev(3, "00000000000000bb", 0)), None))),
        );
        let mut m = base.clone();
        let out = m.apply_batch(msgs, 0, 0);
        assert!(matches!(out.nack, Some((9, ApplyError::ChunkOrder { seq: 1, .. }))), "{:?}", out.nack);
        assert_eq!(m.version, 3);
    }

    #[test]
    fn deltas_after_a_large_snapshot_share_its_token_table() {
        let tokens: Vec<(u64, u64)> = (0..50_000).map(|i| (i * 7 + 1, 9_000)).collect();
        let mut m = Model::default();
        assert!(m.apply_batch(parts(1, &tokens, 4_096), 0, 0).snapshot);
        let published = m.to_state(0, &Liveness::default());
        for v in 2..200u64 {
            let hex = format!("{:016x}", 1_000_000 + v);
            let out = m.apply_batch(
                vec![msg(Cm::Delta(delta(v, pb::change::Kind::Revocation(token_rev(v, &hex, 9_000)), None)))],
                100,
                0,
            );
            assert!(out.changed);
        }
        let state = m.to_state(0, &Liveness::default());
        assert_eq!(state.revocations.counts().token_ids, 50_000 + 198);
        assert_eq!(published.revocations.counts().token_ids, 50_000, "a published state never changes");
        // Pruning walks nothing while no entry is due, then drops what expired.
        assert_eq!(m.prune(9_000, 0), 0);
        assert_eq!(m.prune(9_001, 0), 50_000 + 198);
    }
}
