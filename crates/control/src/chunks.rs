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

use prost::Message;
use stile_proto::v1 as pb;

use crate::model::{Revocation, Target};

/// Token ids per chunk: 4096 × ~9 bytes ≈ 37 KB, under a second on a
/// 40 kB/s link, so even such a link delivers a message well within the
/// edge's silence timeout (`sync.heartbeat_timeout_ms`, 5 s by default).
pub(crate) const TOKENS_PER_CHUNK: usize = 4_096;
/// Encoded bytes of other revocations and purges after which a chunk is closed.
pub(crate) const CHUNK_BYTES: usize = 32 << 10;

/// A snapshot in parts, ready to be sent (shared by the sessions that need it).
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    /// The first message (`reset` false; a session sets it on its copy).
    pub(crate) begin: pb::SnapshotBegin,
    /// The parts, `seq` 0.., the last one marked `last`.
    pub(crate) chunks: Vec<pb::SnapshotChunk>,
}

impl Chunked {
    /// Bytes of every message encoded: what the snapshot costs on the wire
    /// (before HTTP/2 framing).
    pub(crate) fn encoded_len(&self) -> usize {
        self.begin.encoded_len() + self.chunks.iter().map(Message::encoded_len).sum::<usize>()
    }
}

/// Builds a [`Chunked`] from revocations and purges fed one at a time, so the
/// caller may read them from the store in pages.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    out: Chunked,
    /// Token ids and expiries of the open chunk.
    tokens: Vec<(u64, u64)>,
    others: Vec<pb::Revocation>,
    purges: Vec<pb::Purge>,
    /// Encoded bytes of `others` and `purges`.
    bytes: usize,
}

impl ChunkWriter {
    /// A writer for a snapshot of `version` with these keys and purge floor.
    pub(crate) fn new(version: u64, keys: Vec<pb::EdgeKey>, purge_floor: u64) -> ChunkWriter {
        let begin = pb::SnapshotBegin { version, keys, purge_floor, ..Default::default() };
        ChunkWriter {
            out: Chunked { begin, chunks: Vec::new() },
            tokens: Vec::with_capacity(TOKENS_PER_CHUNK),
            others: Vec::new(),
            purges: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds one revocation in force.
    pub(crate) fn revocation(&mut self, r: Revocation) {
        if let Target::Token { token_id } = r.target {
            self.tokens.push((token_id, r.expires_at));
            self.out.begin.token_ids += 1;
            if self.tokens.len() >= TOKENS_PER_CHUNK {
                self.close();
            }
            return;
        }
        let r = pb::Revocation::from(r);
        self.bytes += framed(r.encoded_len());
        self.others.push(r);
        self.out.begin.revocations += 1;
        if self.bytes >= CHUNK_BYTES {
            self.close();
        }
    }

    /// Adds one retained purge (in version order).
    pub(crate) fn purge(&mut self, p: pb::Purge) {
        self.bytes += framed(p.encoded_len());
        self.purges.push(p);
        self.out.begin.purges += 1;
        if self.bytes >= CHUNK_BYTES {
            self.close();
        }
    }

    /// The snapshot: the open chunk closed as the last one (an empty
    /// snapshot still has one, empty, chunk).
    pub(crate) fn finish(mut self) -> Chunked {
        self.close();
        if let Some(last) = self.out.chunks.last_mut() {
            last.last = true;
        }
        self.out.begin.chunks = self.out.chunks.len() as u64;
        self.out
    }

    fn close(&mut self) {
        if self.tokens.is_empty() && self.others.is_empty() && self.purges.is_empty() && !self.out.chunks.is_empty() {
            return;
        }
        self.tokens.sort_unstable_by_key(|&(id, expiry)| (expiry, id));
        let mut token_ids = Vec::with_capacity(self.tokens.len() * 8);
        let mut token_expiry_deltas = Vec::with_capacity(self.tokens.len());
        let mut previous = 0;
        for &(id, expiry) in &self.tokens {
            token_ids.extend_from_slice(&id.to_be_bytes());
            token_expiry_deltas.push(expiry - previous);
            previous = expiry;
        }
        self.tokens.clear();
        self.bytes = 0;
        self.out.chunks.push(pb::SnapshotChunk {
            version: self.out.begin.version,
            seq: self.out.chunks.len() as u64,
            token_ids,
            token_expiry_deltas,
            revocations: std::mem::take(&mut self.others),
            purges: std::mem::take(&mut self.purges),
            last: false,
        });
    }
}

/// Bytes of an entry of a repeated message field: tag, length, message.
fn framed(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: u64, expires_at: u64) -> Revocation {
        Revocation {
            version: id,
            target: Target::Token { token_id: id },
            reason: "leak".into(),
            actor: "ops".into(),
            created_at: 1,
            expires_at,
        }
    }

    #[test]
    fn token_ids_are_packed_in_expiry_order_and_chunks_are_bounded() {
        let mut w = ChunkWriter::new(9, vec![], 3);
        let n = TOKENS_PER_CHUNK as u64 * 2 + 5;
        for i in 0..n {
            w.revocation(token(i, 2_000_000_000 - (i % 7)));
        }
        w.revocation(Revocation {
            target: Target::Subject { subject: "alice".into(), issued_before: 5 },
            ..token(0, 2_000_000_000)
        });
        let c = w.finish();
        assert_eq!((c.begin.version, c.begin.token_ids, c.begin.revocations, c.begin.chunks), (9, n, 1, 3));
        assert_eq!(c.chunks.iter().map(|k| (k.seq, k.last)).collect::<Vec<_>>(), [(0, false), (1, false), (2, true)]);
        let first = &c.chunks[0];
        assert_eq!(first.token_ids.len(), TOKENS_PER_CHUNK * 8);
        assert_eq!(first.token_expiry_deltas[0], 2_000_000_000 - 6, "the smallest expiry first, absolute");
        assert!(first.token_expiry_deltas[1..].iter().all(|&d| d <= 1), "then differences");
        assert_eq!(c.chunks[2].revocations.len(), 1);
        let per_token = c.encoded_len() as f64 / n as f64;
        assert!(per_token < 10.0, "{per_token} bytes per token revocation");
    }

    #[test]
    fn an_empty_snapshot_has_one_last_chunk() {
        let c = ChunkWriter::new(4, vec![], 0).finish();
        assert_eq!(c.begin.chunks, 1);
        assert_eq!(c.chunks, [pb::SnapshotChunk { version: 4, last: true, ..Default::default() }]);
    }

    #[test]
    fn other_entries_close_a_chunk_by_size() {
        let mut w = ChunkWriter::new(1, vec![], 0);
        let purge = |v| pb::Purge {
            version: v,
            target: Some(pb::PurgeTarget {
                target: Some(pb::purge_target::Target::Prefix(format!("/vod/{v:0>200}/"))),
            }),
            ..Default::default()
        };
        for v in 0..2_000 {
            w.purge(purge(v));
        }
        let c = w.finish();
        assert_eq!(c.begin.purges, 2_000);
        assert!(c.chunks.len() > 2);
        assert!(c.chunks.iter().all(|k| k.encoded_len() < CHUNK_BYTES + 1_000));
        let versions: Vec<u64> = c.chunks.iter().flat_map(|k| k.purges.iter().map(|p| p.version)).collect();
        assert_eq!(versions, (0..2_000).collect::<Vec<_>>(), "purges stay in order");
    }
}
