//! A snapshot in parts (`SnapshotBegin`, then `SnapshotChunk`s up to the one
//! marked `last`): what an edge that said `EdgeHello.chunked_snapshots` gets
//! instead of one `Snapshot` message (`docs/sync-protocol.md`, "Snapshots in
//! parts").
//!
//! Every chunk is small (at most [`TOKENS_PER_CHUNK`] token ids plus about
//! [`CHUNK_BYTES`] of other entries), so no message is large, each one shows
//! the edge progress, and a session holds one chunk at a time in its send
//! buffer. Token-id revocations are packed: the id as 8 bytes, the expiry as
//! the difference from the previous one in the chunk (sorted by expiry), about
//! 9 bytes a revocation on the wire against some 50 as `Revocation` messages.
//! Reason, actor, creation time and version of a token revocation stay in the
//! control plane: an edge uses none of them.
//!
//! [`Live`] keeps the revocations in force in that packed form, current with
//! the store: each revocation committed is added once (read from the store by
//! version), every [`TOKENS_PER_CHUNK`] token ids are sealed into a [`Packed`]
//! part, and a snapshot is the sealed parts as they are (shared, `Arc`), the
//! open one packed, and the other entries — built in time proportional to the
//! number of chunks, not by reading the whole set from the store again. Its
//! memory is the wire size: about 9 bytes a token revocation.

use std::sync::Arc;

use prost::Message;
use prost::bytes::Bytes;
use stile_proto::v1 as pb;

use crate::model::{Revocation, Target};

/// Token ids per chunk: 4096 × ~9 bytes ≈ 37 KB, under a second on a
/// 40 kB/s link, so even such a link delivers a message well within the
/// edge's silence timeout (`sync.heartbeat_timeout_ms`, 5 s by default).
pub(crate) const TOKENS_PER_CHUNK: usize = 4_096;
/// Encoded bytes of other revocations and purges after which a chunk is closed.
pub(crate) const CHUNK_BYTES: usize = 32 << 10;

/// The token ids of one chunk, packed as they travel; built once and shared
/// by every snapshot and every session that sends it (the ids are a
/// [`Bytes`], so a chunk's copy for a session is a reference count).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Packed {
    /// 8 bytes each, big-endian, in expiry order (ties by id).
    ids: Bytes,
    /// Their expiries: the first absolute, then the differences, each a
    /// protobuf varint (as `SnapshotChunk.token_expiry_deltas` travels).
    expiries: Box<[u8]>,
    /// The first (smallest) expiry.
    first_expiry: u64,
}

impl Packed {
    /// Packs `tokens` (id, expiry), sorting them by expiry.
    fn new(tokens: &mut [(u64, u64)]) -> Packed {
        tokens.sort_unstable_by_key(|&(id, expiry)| (expiry, id));
        let mut ids = Vec::with_capacity(tokens.len() * 8);
        let mut expiries = Vec::with_capacity(tokens.len() + 8);
        let mut previous = 0;
        for &(id, expiry) in tokens.iter() {
            ids.extend_from_slice(&id.to_be_bytes());
            prost::encoding::encode_varint(expiry - previous, &mut expiries);
            previous = expiry;
        }
        Packed { ids: ids.into(), expiries: expiries.into(), first_expiry: tokens.first().map_or(0, |t| t.1) }
    }

    /// Token ids held.
    pub(crate) fn len(&self) -> usize {
        self.ids.len() / 8
    }

    /// The expiry differences, as `SnapshotChunk.token_expiry_deltas`.
    fn deltas(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.len());
        let mut buf = &self.expiries[..];
        while !buf.is_empty() {
            // Written by `new` or `after`: always well formed.
            out.push(prost::encoding::decode_varint(&mut buf).unwrap_or(0));
        }
        out
    }

    /// Without the entries expired at `now` (an expiry at or before it):
    /// the same part when none is, `None` when all are. Entries are in
    /// expiry order, so the expired ones are a prefix.
    fn unexpired(self: &Arc<Packed>, now: u64) -> Option<Arc<Packed>> {
        if self.first_expiry > now {
            return Some(Arc::clone(self));
        }
        let deltas = self.deltas();
        let mut expiry = 0;
        let mut keep = deltas.len();
        for (i, d) in deltas.iter().enumerate() {
            expiry += d;
            if expiry > now {
                keep = i;
                break;
            }
        }
        if keep == deltas.len() {
            return None;
        }
        let mut expiries = Vec::with_capacity(self.expiries.len());
        prost::encoding::encode_varint(expiry, &mut expiries);
        for &d in &deltas[keep + 1..] {
            prost::encoding::encode_varint(d, &mut expiries);
        }
        Some(Arc::new(Packed { ids: self.ids.slice(keep * 8..), expiries: expiries.into(), first_expiry: expiry }))
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        self.ids.len() + self.expiries.len()
    }
}

/// The revocations in force up to a version, kept in the form a snapshot in
/// parts sends them (see the module documentation). Fed in version order by
/// [`Live::add`]; [`Live::snapshot`] makes a [`Chunked`] of it.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Every revocation committed up to this version is in (or expired).
    version: u64,
    /// Full parts of [`TOKENS_PER_CHUNK`] token ids (fewer once some expired).
    sealed: Vec<Arc<Packed>>,
    /// Token ids (id, expiry) not sealed yet.
    open: Vec<(u64, u64)>,
    /// The other revocations (subjects, paths, keys), in version order.
    others: Vec<pb::Revocation>,
}

impl Live {
    /// The version it is current with.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Adds a revocation committed after [`Live::version`]; an older one is
    /// already in and is ignored.
    pub(crate) fn add(&mut self, r: Revocation) {
        if r.version <= self.version {
            return;
        }
        self.version = r.version;
        if let Target::Token { token_id } = r.target {
            self.open.push((token_id, r.expires_at));
            if self.open.len() >= TOKENS_PER_CHUNK {
                self.sealed.push(Arc::new(Packed::new(&mut self.open)));
                self.open.clear();
            }
            return;
        }
        self.others.push(r.into());
    }

    /// Every revocation committed up to `version` has been added.
    pub(crate) fn reached(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// Drops what expired at `now` (an expiry at or before it).
    pub(crate) fn prune(&mut self, now: u64) {
        if self.sealed.iter().any(|p| p.first_expiry <= now) {
            self.sealed = self.sealed.iter().filter_map(|p| p.unexpired(now)).collect();
        }
        self.open.retain(|&(_, expiry)| expiry > now);
        self.others.retain(|r| r.expires_at > now);
    }

    /// Token-id revocations held.
    pub(crate) fn token_ids(&self) -> usize {
        self.sealed.iter().map(|p| p.len()).sum::<usize>() + self.open.len()
    }

    /// Heap bytes held (the sealed parts, the open one, the others' messages).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.sealed.iter().map(|p| p.heap_bytes()).sum::<usize>()
            + self.open.capacity() * 16
            + self.others.iter().map(Message::encoded_len).sum::<usize>()
    }

    /// A snapshot of [`Live::version`] with these keys, purge floor and
    /// retained purges (in version order), leaving out what expired at `now`.
    pub(crate) fn snapshot(
        &mut self,
        keys: Vec<pb::EdgeKey>,
        purge_floor: u64,
        purges: Vec<pb::Purge>,
        now: u64,
    ) -> Chunked {
        self.prune(now);
        let mut begin = pb::SnapshotBegin { version: self.version, keys, purge_floor, ..Default::default() };
        let mut parts: Vec<Part> = self.sealed.iter().map(|p| Part::tokens(Arc::clone(p))).collect();
        if !self.open.is_empty() {
            parts.push(Part::tokens(Arc::new(Packed::new(&mut self.open.clone()))));
        }
        begin.token_ids = parts.iter().map(|p| p.tokens.as_ref().map_or(0, |t| t.len() as u64)).sum();
        begin.revocations = self.others.len() as u64;
        begin.purges = purges.len() as u64;
        // The other entries: chunks of about CHUNK_BYTES.
        let mut open = Part::default();
        let mut bytes = 0;
        let others = self.others.iter().cloned().map(Entry::Revocation);
        for entry in others.chain(purges.into_iter().map(Entry::Purge)) {
            bytes += entry.framed_len();
            match entry {
                Entry::Revocation(r) => open.revocations.push(r),
                Entry::Purge(p) => open.purges.push(p),
            }
            if bytes >= CHUNK_BYTES {
                parts.push(std::mem::take(&mut open));
                bytes = 0;
            }
        }
        if !open.revocations.is_empty() || !open.purges.is_empty() || parts.is_empty() {
            parts.push(open);
        }
        begin.chunks = parts.len() as u64;
        Chunked { begin, parts }
    }
}

/// An other entry of a snapshot (not a packed token id).
enum Entry {
    Revocation(pb::Revocation),
    Purge(pb::Purge),
}

impl Entry {
    /// Bytes of it as an entry of a repeated message field: tag, length, message.
    fn framed_len(&self) -> usize {
        let len = match self {
            Entry::Revocation(r) => r.encoded_len(),
            Entry::Purge(p) => p.encoded_len(),
        };
        1 + prost::length_delimiter_len(len) + len
    }
}

/// What one chunk carries.
#[derive(Debug, Default)]
struct Part {
    tokens: Option<Arc<Packed>>,
    revocations: Vec<pb::Revocation>,
    purges: Vec<pb::Purge>,
}

impl Part {
    fn tokens(p: Arc<Packed>) -> Part {
        Part { tokens: Some(p), ..Part::default() }
    }
}

/// A snapshot in parts, ready to be sent (shared by the sessions that need
/// it): the begin message, and the chunks, each made when it is sent
/// ([`Chunked::chunk`]; the token ids are shared, not copied).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    /// The first message (`reset` false; a session sets it on its copy).
    pub(crate) begin: pb::SnapshotBegin,
    parts: Vec<Part>,
}

impl Chunked {
    /// Chunks.
    pub(crate) fn len(&self) -> usize {
        self.parts.len()
    }

    /// Chunk `seq` (the last one marked `last`).
    pub(crate) fn chunk(&self, seq: usize) -> pb::SnapshotChunk {
        let part = &self.parts[seq];
        let (token_ids, token_expiry_deltas) =
            part.tokens.as_ref().map_or_else(Default::default, |t| (t.ids.clone(), t.deltas()));
        pb::SnapshotChunk {
            version: self.begin.version,
            seq: seq as u64,
            token_ids,
            token_expiry_deltas,
            revocations: part.revocations.clone(),
            purges: part.purges.clone(),
            last: seq + 1 == self.parts.len(),
        }
    }

    /// Bytes of every message encoded: what the snapshot costs on the wire
    /// (before HTTP/2 framing).
    pub(crate) fn encoded_len(&self) -> usize {
        self.begin.encoded_len() + (0..self.len()).map(|seq| self.chunk(seq).encoded_len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u64, expires_at: u64) -> Revocation {
        Revocation {
            version: id + 1,
            target: Target::Token { token_id: id },
            reason: "leak".into(),
            actor: "ops".into(),
            created_at: 1,
            expires_at,
        }
    }

    fn chunks(c: &Chunked) -> Vec<pb::SnapshotChunk> {
        (0..c.len()).map(|seq| c.chunk(seq)).collect()
    }

    #[test]
    fn token_ids_are_packed_in_expiry_order_and_chunks_are_bounded() {
        let mut live = Live::default();
        let n = TOKENS_PER_CHUNK as u64 * 2 + 5;
        for i in 0..n {
            live.add(token(i, 2_000_000_000 - (i % 7)));
        }
        live.add(Revocation {
            target: Target::Subject { subject: "alice".into(), issued_before: 5 },
            ..token(n, 2_000_000_000)
        });
        let c = live.snapshot(vec![], 3, vec![], 1);
        assert_eq!((c.begin.version, c.begin.token_ids, c.begin.revocations, c.begin.chunks), (n + 1, n, 1, 4));
        let cs = chunks(&c);
        assert_eq!(
            cs.iter().map(|k| (k.seq, k.last)).collect::<Vec<_>>(),
            [(0, false), (1, false), (2, false), (3, true)]
        );
        let first = &cs[0];
        assert_eq!(first.token_ids.len(), TOKENS_PER_CHUNK * 8);
        assert_eq!(first.token_expiry_deltas[0], 2_000_000_000 - 6, "the smallest expiry first, absolute");
        assert!(first.token_expiry_deltas[1..].iter().all(|&d| d <= 1), "then differences");
        assert_eq!(cs[2].token_ids.len(), 5 * 8, "the open part, packed");
        assert_eq!(cs[3].revocations.len(), 1);
        let per_token = c.encoded_len() as f64 / n as f64;
        assert!(per_token < 10.0, "{per_token} bytes per token revocation");
        assert!(live.heap_bytes() < (n as usize) * 10 + TOKENS_PER_CHUNK * 16, "{} bytes held", live.heap_bytes());
    }

    #[test]
    fn an_empty_snapshot_has_one_last_chunk() {
        let mut live = Live::default();
        live.reached(4);
        let c = live.snapshot(vec![], 0, vec![], 1);
        assert_eq!(c.begin.chunks, 1);
        assert_eq!(chunks(&c), [pb::SnapshotChunk { version: 4, last: true, ..Default::default() }]);
    }

    #[test]
    fn other_entries_close_a_chunk_by_size() {
        let mut live = Live::default();
        let purge = |v| pb::Purge {
            version: v,
            target: Some(pb::PurgeTarget {
                target: Some(pb::purge_target::Target::Prefix(format!("/vod/{v:0>200}/"))),
            }),
            ..Default::default()
        };
        let c = live.snapshot(vec![], 0, (0..2_000).map(purge).collect(), 1);
        assert_eq!(c.begin.purges, 2_000);
        let cs = chunks(&c);
        assert!(cs.len() > 2);
        assert!(cs.iter().all(|k| k.encoded_len() < CHUNK_BYTES + 1_000));
        let versions: Vec<u64> = cs.iter().flat_map(|k| k.purges.iter().map(|p| p.version)).collect();
        assert_eq!(versions, (0..2_000).collect::<Vec<_>>(), "purges stay in order");
    }

    /// The packed token ids of a snapshot, decoded: (id, expiry), sorted.
    fn decoded(c: &Chunked) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for k in chunks(c) {
            let mut expiry = 0;
            for (id, d) in k.token_ids.chunks_exact(8).zip(&k.token_expiry_deltas) {
                expiry += d;
                out.push((u64::from_be_bytes(id.try_into().unwrap()), expiry));
            }
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn expired_entries_leave_sealed_parts_and_shared_parts_are_not_copied() {
        let mut live = Live::default();
        let n = TOKENS_PER_CHUNK as u64 * 3 + 10;
        // Expiries 1000.. spread over the parts; every third expires at 1500.
        let expiry = |i: u64| if i.is_multiple_of(3) { 1_500 } else { 2_000 + i };
        for i in 0..n {
            live.add(token(i, expiry(i)));
        }
        let all = live.snapshot(vec![], 0, vec![], 1_000);
        let a = all.chunk(0);
        let b = all.chunk(0);
        assert_eq!(a.token_ids.as_ptr(), b.token_ids.as_ptr(), "a chunk's token ids are shared, not copied");
        assert_eq!(decoded(&all), (0..n).map(|i| (i, expiry(i))).collect::<Vec<_>>());
        let later = live.snapshot(vec![], 0, vec![], 1_500);
        let want: Vec<(u64, u64)> = (0..n).filter(|i| !i.is_multiple_of(3)).map(|i| (i, expiry(i))).collect();
        assert_eq!(decoded(&later), want);
        assert_eq!(later.begin.token_ids, want.len() as u64);
        assert_eq!(live.token_ids(), want.len());
        let none = live.snapshot(vec![], 0, vec![], u64::MAX - 1);
        assert_eq!((none.begin.token_ids, none.begin.chunks), (0, 1));
    }

    #[test]
    fn a_revocation_already_in_is_ignored() {
        let mut live = Live::default();
        live.add(token(5, 100));
        live.add(token(5, 100));
        live.add(token(2, 100));
        assert_eq!((live.version(), live.token_ids()), (6, 1));
    }
}
