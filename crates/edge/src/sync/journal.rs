//! The state cache's journal: every applied delta is appended (no fsync) to
//! `<state.file>.journal.<n>` before it is ACKed, so an edge killed right
//! after an ACK restarts at the ACKed version, never behind it, at a cost
//! proportional to the delta rather than to the whole state.
//!
//! The full cache file is rewritten (with fsync) at most every
//! `sync.cache_interval_ms`, off the receive loop: the loop first closes the
//! current segment and starts the next, so the segments the full write
//! covers are exactly the closed ones, which the writer deletes once the new
//! file is in place. On start the cache file is loaded and every segment's
//! deltas above its version are replayed in order; a torn record (the
//! process died mid-write) ends its segment.
//!
//! A record is a little-endian `u32` length and a protobuf `Delta`. Segment
//! files are created 0600: key deltas carry secrets.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use stile_proto::v1 as pb;

use super::model::Model;

/// Largest record read back; a larger length prefix is a torn or foreign file.
const MAX_RECORD: usize = 64 << 20;

/// The open journal: appends go to segment `next` (created on first use).
#[derive(Debug)]
pub(crate) struct Journal {
    base: PathBuf,
    next: u64,
    file: Option<File>,
}

impl Journal {
    /// A journal beside `cache` (the state file), appending after every
    /// existing segment.
    pub(crate) fn open(cache: &Path) -> Journal {
        let next = segments(cache).last().map_or(1, |(n, _)| n + 1);
        Journal { base: cache.to_owned(), next, file: None }
    }

    /// Appends the deltas as records of the current segment, in one write.
    pub(crate) fn append(&mut self, deltas: &[pb::Delta]) -> io::Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for d in deltas {
            let len = u32::try_from(d.encoded_len()).map_err(|_| io::Error::other("delta too large"))?;
            buf.extend_from_slice(&len.to_le_bytes());
            d.encode(&mut buf).map_err(io::Error::other)?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(create(&segment_path(&self.base, self.next))?),
        };
        file.write_all(&buf)
    }

    /// Closes the current segment and starts the next; returns the closed
    /// segment's number: a full write of the state as of now covers every
    /// segment up to it.
    pub(crate) fn rotate(&mut self) -> u64 {
        self.file = None;
        let closed = self.next;
        self.next += 1;
        closed
    }
}

/// Deletes the segments numbered `through` and below (after a full write).
pub(crate) fn remove_through(cache: &Path, through: u64) -> io::Result<()> {
    for (n, path) in segments(cache) {
        if n <= through {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Applies every journaled delta above the model's version, segment by
/// segment; returns how many were applied. Stops at the first delta the model
/// refuses (a gap: the control plane fills it) and at a torn record.
pub(crate) fn replay(cache: &Path, model: &mut Model) -> usize {
    let mut applied = 0;
    for (_, path) in segments(cache) {
        let bytes = match std::fs::File::open(&path).and_then(|mut f| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).map(|_| v)
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(journal = %path.display(), error = %e, "sync.journal_unreadable");
                return applied;
            }
        };
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let Some(delta) = next_record(&mut rest) else {
                tracing::warn!(journal = %path.display(), "sync.journal_torn: the rest of this segment is ignored");
                break;
            };
            let before = model.version;
            match model.apply_delta(&delta) {
                Ok(_) if model.version > before => applied += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(journal = %path.display(), error = %e, "sync.journal_stopped");
                    return applied;
                }
            }
        }
    }
    applied
}

/// Splits one record off `rest`; `None` when it is torn or not a delta.
fn next_record(rest: &mut &[u8]) -> Option<pb::Delta> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_RECORD || tail.len() < len {
        return None;
    }
    let delta = pb::Delta::decode(&tail[..len]).ok()?;
    *rest = &tail[len..];
    Some(delta)
}

fn segment_path(cache: &Path, n: u64) -> PathBuf {
    let mut name = cache.as_os_str().to_owned();
    name.push(format!(".journal.{n}"));
    PathBuf::from(name)
}

/// The journal segments beside `cache`, by number.
fn segments(cache: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(stem)) = (cache.parent(), cache.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{stem}.journal.");
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    out.sort_unstable_by_key(|(n, _)| *n);
    out
}

fn create(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(version: u64, token_id: u64) -> pb::Delta {
        let r = pb::Revocation {
            version,
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::TokenId(format!("{token_id:016x}"))),
            }),
            expires_at: u64::MAX / 2,
            ..Default::default()
        };
        pb::Delta {
            change: Some(pb::Change { version, kind: Some(pb::change::Kind::Revocation(r)), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn appended_deltas_replay_after_the_cache_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.json");
        let mut j = Journal::open(&cache);
        j.append(&[revoke(1, 1), revoke(2, 2)]).unwrap();
        let closed = j.rotate();
        j.append(&[revoke(3, 3)]).unwrap();
        // A torn record at the end of the newest segment: a length with half its body.
        let mut torn = 100u32.to_le_bytes().to_vec();
        torn.extend_from_slice(&[0; 10]);
        j.file.as_mut().unwrap().write_all(&torn).unwrap();

        let mut model = Model::default();
        assert_eq!(replay(&cache, &mut model), 3);
        assert_eq!(model.version, 3);

        // A full write covering the closed segment removes it; replay starts above the model.
        remove_through(&cache, closed).unwrap();
        assert_eq!(segments(&cache).len(), 1);
        let mut model = Model::default();
        assert_eq!(replay(&cache, &mut model), 0, "a gap (1–2 gone, no cache) stops the replay");
        assert_eq!(model.version, 0);

        // A reopened journal never appends to an existing segment.
        let reopened = Journal::open(&cache);
        assert_eq!(reopened.next, closed + 2);
    }

    #[cfg(unix)]
    #[test]
    fn segments_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.json");
        let mut j = Journal::open(&cache);
        j.append(&[revoke(1, 1)]).unwrap();
        let mode = std::fs::metadata(segment_path(&cache, 1)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
