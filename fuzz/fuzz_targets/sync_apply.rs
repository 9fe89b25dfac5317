//! Sync-stream messages applied to the edge's model (`stile_edge::sync::Model`),
//! as the sync client applies them.
//!
//! The first byte picks a mode:
//! - `0`: the rest is one `ControlMessage` (protobuf), applied to an empty model
//!   and to a populated one;
//! - `1`: the rest is a sequence of `ControlMessage`s, each preceded by its
//!   length (u16, little endian), applied in order to a populated model;
//! - `2`: the rest is a sequence of 8-byte operations that build well-formed
//!   messages whose versions sit next to the applied one (duplicates, the next
//!   version, gaps, older and `reset` snapshots, purge changes, snapshots with
//!   retained purges and a purge floor, snapshots in parts: begins and
//!   chunks in and out of sequence, with packed token ids, counts that match
//!   or not, foreign keys in snapshots and foreign key changes with good, bad,
//!   mismatched or missing material), so that ordering bugs are reachable
//!   without finding valid protobuf first.
//!
//! Messages are applied as the sync client applies them, through
//! `Model::apply_batch` (modes 1 and 2 cut the sequence into batches).
//!
//! Invariants: nothing panics; the version never goes back (except by a snapshot
//! with `reset`, the documented exception); a batch stops at its first refused
//! message, which leaves the model as the messages before it left it (checked
//! against applying those alone); a batch with nothing applied changes nothing;
//! purges are new and canonical; the journaled deltas, replayed onto the model
//! as it was, reach the version ACKed (so a restarted edge is never behind an
//! ACK); pruning keeps the version and only removes; the state built from the
//! model carries its version; the cache file form round-trips to the same model
//! and loads as a static state file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::path::Path;
use stile_edge::state::{Liveness, StateFile};
use stile_edge::sync::{BatchOutcome, Model, PurgeTarget};
use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;

const LEEWAY: u64 = 5;

/// Applies one batch like the sync client does, and checks the invariants.
fn apply(model: &mut Model, batch: Vec<pb::ControlMessage>, now: u64) -> BatchOutcome {
    let before = model.clone();
    let out = model.apply_batch(batch.clone(), now, LEEWAY);
    let updates = batch
        .iter()
        .filter(|m| {
            matches!(m.kind, Some(Cm::Snapshot(_) | Cm::Delta(_) | Cm::SnapshotBegin(_) | Cm::SnapshotChunk(_)))
        })
        .count();
    let applied = usize::try_from(out.snapshots + out.deltas).expect("small");
    assert!(applied + usize::from(out.nack.is_some()) <= updates);
    assert_eq!(out.changed, applied > 0);
    assert_eq!(out.snapshot, out.snapshots > 0);
    if !out.changed {
        assert_eq!(*model, before, "a batch that applied nothing changed the model");
        assert_eq!(out.pruned, 0);
    }
    if out.resets.is_empty() {
        assert!(model.version >= before.version, "went back: {} -> {}", before.version, model.version);
    }
    for p in &out.purges {
        assert!(p.version > before.version || !out.resets.is_empty(), "purge {} already seen", p.version);
        match &p.target {
            PurgeTarget::Prefix(path) => assert!(stile_token::is_canonical(path) && path.ends_with('/')),
            PurgeTarget::Path(path) => assert!(stile_token::is_canonical(path) && !path.ends_with('/')),
            PurgeTarget::All => {}
        }
    }
    if let Some((_, e)) = &out.nack {
        assert!(!e.to_string().is_empty());
        // Exactly the messages before the refused one were applied: applying them alone agrees.
        let refused = refused_at(&before, &batch, now);
        let mut prefix = before.clone();
        let alone = prefix.apply_batch(batch[..refused].to_vec(), now, LEEWAY);
        assert!(alone.nack.is_none(), "the prefix before a refusal is refused");
        assert_eq!(prefix, *model, "a refused message changed the model");
        assert_eq!(alone.heartbeats.len(), out.heartbeats.len());
    } else {
        let heartbeats = batch.iter().filter(|m| matches!(m.kind, Some(Cm::Heartbeat(_)))).count();
        assert_eq!(out.heartbeats.len(), heartbeats);
    }
    // What is journaled before the ACK gets a restarted edge to the ACKed version: replayed
    // onto the model as it was (the snapshot case writes the whole file instead).
    let mut versions = out.journal.iter().map(|d| d.change.as_ref().expect("journaled change").version);
    assert!(versions.clone().zip(versions.clone().skip(1)).all(|(a, b)| b == a + 1), "journal out of order");
    if !out.snapshot {
        let mut replayed = before.clone();
        for d in &out.journal {
            replayed.apply_delta(d).expect("a journaled delta replays");
        }
        if out.changed {
            replayed.prune(now, LEEWAY);
        }
        assert_eq!(replayed, *model, "the journal does not reach the ACKed state");
    } else if let Some(last) = versions.next_back()
        && out.resets.is_empty()
    {
        // The whole file is written instead; it holds every journaled delta (a reset may go below them).
        assert!(last <= model.version, "journaled {last} above the applied {}", model.version);
    }
    out
}

/// The index of the message a batch refuses (the batch is known to refuse one):
/// the shortest prefix that `apply_batch` refuses ends with it (a prefix of a
/// refused prefix may pass, a longer one never does, so bisect).
fn refused_at(before: &Model, batch: &[pb::ControlMessage], now: u64) -> usize {
    let (mut lo, mut hi) = (0, batch.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before.clone().apply_batch(batch[..=mid].to_vec(), now, LEEWAY).nack.is_some() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The checks run on the model after a sequence.
fn check(model: &mut Model, now: u64) {
    let version = model.version;
    let mut pruned = model.clone();
    let n = pruned.prune(now, 5);
    assert_eq!(pruned.version, version, "prune changed the version");
    assert_eq!(pruned.clone().prune(now, 5), 0, "prune is idempotent");
    let state = model.to_state(now, &Liveness::default());
    assert_eq!(state.version, version);
    let pruned_state = pruned.to_state(now, &Liveness::default());
    assert_eq!(state.revocations.len() - pruned_state.revocations.len(), n, "prune removes whole entries");

    // The cache file round-trips, through JSON, to the same model...
    let json = serde_json::to_vec(&model.to_file(now)).expect("the cache file serialises");
    let file: StateFile = serde_json::from_slice(&json).expect("the cache file parses");
    let back = Model::from_file(&file, Path::new("cache.json")).expect("the cache file loads");
    assert_eq!(back, *model, "the cache file did not round-trip");
    // ...and is a valid static state file with the same contents.
    let file: StateFile = serde_json::from_slice(&json).expect("the cache file parses");
    let loaded = file.into_state(Path::new("state.json"), 0, 0).expect("the cache file is a valid state file");
    assert_eq!(loaded.version, version);
    assert_eq!(loaded.revocations.counts(), state.revocations.counts());
    *model = pruned;
}

fn key(id: u32, fill: u8) -> pb::EdgeKey {
    pb::EdgeKey { key_id: id, state: pb::KeyState::Active.into(), secret: vec![fill; 32], ..Default::default() }
}

/// An Ed25519 key as the control plane pushes it: the public key only.
fn ed25519_key(id: u32, fill: u8) -> pb::EdgeKey {
    let public = stile_token::Ed25519Secret::from_bytes([fill; 32]).public();
    pb::EdgeKey {
        key_id: id,
        state: pb::KeyState::Active.into(),
        algorithm: pb::KeyAlgorithm::Ed25519.into(),
        public_key: public.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn target(t: pb::revocation_target::Target) -> Option<pb::RevocationTarget> {
    Some(pb::RevocationTarget { target: Some(t) })
}

/// A purge of a prefix (`kind` `p`) or of one path (any other).
fn purge(version: u64, kind: u8, path: &str) -> pb::Purge {
    use pb::purge_target::Target as P;
    let t = if kind == b'p' { P::Prefix(path.into()) } else { P::Path(path.into()) };
    pb::Purge { version, target: Some(pb::PurgeTarget { target: Some(t) }), ..Default::default() }
}

/// A model at version 10 with two keys, one revocation of each kind and two purges.
fn populated() -> Model {
    use pb::revocation_target::Target as T;
    let rev = |version, t, expires_at| pb::Revocation { version, target: target(t), expires_at, ..Default::default() };
    let mut m = Model::default();
    let snap = pb::Snapshot {
        version: 10,
        keys: vec![key(1, 1), key(2, 2)],
        revocations: vec![
            rev(3, T::TokenId("00000000000000aa".into()), 1_000),
            rev(4, T::Subject(pb::SubjectTarget { subject: "viewer".into(), issued_before: 500 }), 2_000),
            rev(
                5,
                T::PathPrefix(pb::PathPrefixTarget { prefix: "/vod/abc/".into(), issued_before: 500, purge: true }),
                0,
            ),
            rev(6, T::KeyId(3), 3_000),
        ],
        purges: vec![purge(7, b'p', "/vod/abc/"), purge(9, b'e', "/vod/abc/seg.ts")],
        purge_floor: 2,
        ..Default::default()
    };
    m.apply_snapshot(&snap).expect("the populated model applies");
    m
}

fn foreign_key(format: &str, name: &str, key: &str) -> pb::ForeignKey {
    pb::ForeignKey { format: format.into(), name: name.into(), key: key.into() }
}

/// A snapshot's foreign keys from an operation's bytes: none, good ones, or one
/// the edge cannot load (an unknown format, bad hex).
fn foreign_keys(b: &[u8; 8]) -> Vec<pb::ForeignKey> {
    match b[6] % 4 {
        0 => Vec::new(),
        1 => vec![foreign_key("bunny", "zone", "security-key"), foreign_key("akamai", "primary", "52a1")],
        2 => vec![foreign_key("fastly", "k", "x")],
        _ => vec![foreign_key("akamai", "primary", "zz")],
    }
}

/// Mode 2: one operation from 8 bytes.
fn op(model: &Model, b: &[u8; 8]) -> pb::ControlMessage {
    use pb::revocation_target::Target as T;
    // Versions next to the applied one: -2 ..= +3.
    let version = (model.version + u64::from(b[1] % 6)).saturating_sub(2);
    let small = u64::from(b[3]) * 10;
    let values =
        ["0000000000000001", "00000000000000AA", "viewer", "/vod/", "/vod/abc/", "/vod/abc/seg.ts", "", "/a//b"];
    let value = values[usize::from(b[2] % 8)].to_owned();
    let revocation = |version| {
        let t = match b[4] % 5 {
            0 => T::TokenId(value.clone()),
            1 => T::Subject(pb::SubjectTarget { subject: value.clone(), issued_before: small }),
            2 => T::PathPrefix(pb::PathPrefixTarget {
                prefix: value.clone(),
                issued_before: small,
                purge: b[5] & 1 == 1,
            }),
            _ => T::KeyId(u32::from(b[5] % 4)),
        };
        let expires_at = if b[6] & 1 == 0 { 0 } else { u64::from(b[6]) * 10 };
        pb::Revocation { version, target: target(t), expires_at, ..Default::default() }
    };
    let kind = match b[0] % 8 {
        5 => Cm::SnapshotBegin(pb::SnapshotBegin {
            version,
            keys: (0..b[5] % 3).map(|i| key(u32::from(i + (b[2] & 1)), b[6] | 1)).collect(),
            purge_floor: version.saturating_sub(u64::from(b[3] % 4)),
            reset: b[7] & 0x80 != 0,
            token_ids: u64::from(b[3] % 4),
            revocations: u64::from(b[4] % 2),
            purges: u64::from(b[6] % 2),
            chunks: u64::from(1 + b[5] % 2),
            foreign_keys: foreign_keys(b),
        }),
        6 => {
            // Token ids from the operation's bytes; sometimes one byte short.
            let n = usize::from(b[3] % 3);
            let mut token_ids: Vec<u8> =
                (0..n).flat_map(|i| u64::from(b[2]).wrapping_add(i as u64).to_be_bytes()).collect();
            if b[6] & 0x10 != 0 {
                token_ids.pop();
            }
            let token_expiry_deltas =
                (0..n).map(|i| if i == 0 { u64::from(b[6]) * 10 } else { u64::from(b[4] % 3) }).collect();
            Cm::SnapshotChunk(pb::SnapshotChunk {
                version,
                seq: u64::from(b[5] % 3),
                token_ids: token_ids.into(),
                token_expiry_deltas,
                revocations: (0..b[4] % 2).map(|_| revocation(version)).collect(),
                purges: (0..b[6] % 2)
                    .map(|_| purge(version, if b[4] & 1 == 0 { b'p' } else { b'e' }, &value))
                    .collect(),
                last: b[7] & 1 == 1,
            })
        }
        0 => {
            let keys = (0..b[5] % 3).map(|i| key(u32::from(i + (b[2] & 1)), b[6] | 1)).collect();
            let revocations = (0..b[7] % 4).map(|i| revocation(version.saturating_sub(u64::from(i)))).collect();
            let purges = (0..(b[7] >> 2) % 3)
                .map(|i| purge(version.saturating_sub(u64::from(i)), if b[4] & 1 == 0 { b'p' } else { b'e' }, &value))
                .collect();
            let purge_floor = version.saturating_sub(u64::from(b[3] % 4));
            let foreign_keys = foreign_keys(b);
            Cm::Snapshot(pb::Snapshot {
                version,
                keys,
                revocations,
                reset: b[7] & 0x80 != 0,
                purges,
                purge_floor,
                foreign_keys,
            })
        }
        3 => Cm::Delta(pb::Delta {
            change: Some(pb::Change {
                version,
                kind: Some(pb::change::Kind::Purge(purge(version, if b[4] & 1 == 0 { b'p' } else { b'e' }, &value))),
                ..Default::default()
            }),
            key: None,
            foreign_key: None,
        }),
        1 => Cm::Delta(pb::Delta {
            change: Some(pb::Change {
                version,
                kind: Some(pb::change::Kind::Revocation(revocation(version))),
                ..Default::default()
            }),
            key: None,
            foreign_key: None,
        }),
        2 => {
            let id = u32::from(b[5] % 4);
            let state = i32::from(b[4] % 6);
            let material = match b[7] % 6 {
                0 => None,
                1 => Some(key(id, b[6] | 1)),
                2 => Some(key(id + 1, b[6] | 1)),
                3 => Some(pb::EdgeKey {
                    key_id: id,
                    state,
                    secret: vec![b[6]; usize::from(b[6] % 40)],
                    ..Default::default()
                }),
                4 => Some(ed25519_key(id, b[6])),
                // Odd material: any algorithm value, public key bytes of any length (weak
                // points and non-points included), with or without a secret.
                _ => Some(pb::EdgeKey {
                    key_id: id,
                    state,
                    algorithm: i32::from(b[4] % 4),
                    secret: if b[6] & 1 == 0 { Vec::new() } else { vec![b[6]; 32] },
                    public_key: vec![b[6] & 0x7f; usize::from(b[6] % 40)],
                    session_secret: if b[6] & 2 == 0 { Vec::new() } else { vec![b[6]; usize::from(b[6] % 40)] },
                }),
            };
            Cm::Delta(pb::Delta {
                change: Some(pb::Change {
                    version,
                    kind: Some(pb::change::Kind::Key(pb::KeyChange { key_id: id, state, ..Default::default() })),
                    ..Default::default()
                }),
                key: material,
                foreign_key: None,
            })
        }
        7 => {
            // A foreign key change: added or removed, with matching, other, bad or no material.
            let name = ["zone", "other"][usize::from(b[5] & 1)];
            let change = pb::ForeignKeyChange { format: "bunny".into(), name: name.into(), removed: b[4] & 1 == 1 };
            let material = match b[7] % 4 {
                0 => None,
                1 => Some(foreign_key("bunny", name, "security-key")),
                2 => Some(foreign_key("bunny", "zone-2", "security-key")),
                _ => Some(foreign_key("bunny", name, "ed25519:AAAA")),
            };
            Cm::Delta(pb::Delta {
                change: Some(pb::Change {
                    version,
                    kind: Some(pb::change::Kind::ForeignKey(change)),
                    ..Default::default()
                }),
                key: None,
                foreign_key: material,
            })
        }
        _ => Cm::Heartbeat(pb::Heartbeat { cp_time_ms: small, current_version: version, seq: 1, rtt_ms: 1 }),
    };
    pb::ControlMessage { kind: Some(kind) }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let now = u64::from(mode) * 20;
    match mode % 3 {
        0 => {
            let Ok(msg) = pb::ControlMessage::decode(rest) else { return };
            // What was decoded is bounded by what was read (no amplification; an
            // enum read from a 5-byte varint re-encodes sign-extended in 10).
            assert!(msg.encoded_len() <= 2 * rest.len());
            for mut m in [Model::default(), populated()] {
                apply(&mut m, vec![msg.clone()], now);
                check(&mut m, now);
            }
        }
        1 => {
            // A length with its top bit set ends the batch after its message.
            let mut m = populated();
            let mut rest = rest;
            let mut batch = Vec::new();
            while rest.len() >= 2 {
                let raw = u16::from_le_bytes([rest[0], rest[1]]);
                let len = usize::from(raw & 0x7fff).min(rest.len() - 2);
                let (msg, tail) = rest[2..].split_at(len);
                rest = tail;
                if let Ok(msg) = pb::ControlMessage::decode(msg) {
                    batch.push(msg);
                }
                if raw & 0x8000 != 0 {
                    apply(&mut m, std::mem::take(&mut batch), now);
                }
            }
            apply(&mut m, batch, now);
            check(&mut m, now);
        }
        _ => {
            // Operations are built against the model as applied so far, so each is its
            // own batch unless bit 6 of its last byte joins it to the previous one's.
            let mut m = if mode & 0x80 == 0 { populated() } else { Model::default() };
            let mut batch: Vec<pb::ControlMessage> = Vec::new();
            for (i, chunk) in rest.chunks_exact(8).enumerate() {
                let b: &[u8; 8] = chunk.try_into().expect("8 bytes");
                if b[7] & 0x40 == 0 && !batch.is_empty() {
                    apply(&mut m, std::mem::take(&mut batch), now);
                }
                batch.push(op(&m, b));
                if i % 4 == 3 {
                    apply(&mut m, std::mem::take(&mut batch), now);
                    check(&mut m, now);
                }
            }
            apply(&mut m, batch, now);
            check(&mut m, now);
        }
    }
});
