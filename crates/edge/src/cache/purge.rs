//! Purges without scanning: per-path generations.
//!
//! Every fill takes the next store sequence number. A purge takes one too and
//! records it under its canonical path: a prefix ending in `/` (everything under
//! it) or one exact path. An object is purged when the record of its own path,
//! or of any ancestor prefix (`/` included), is newer than the object — O(depth)
//! map probes at lookup, skipped altogether for objects stored after the newest
//! purge, and one map insert per purge, however many objects match. Purged
//! objects are dropped lazily, when a lookup meets them (or at the disk tier's
//! next start).
//!
//! The records are bounded ([`MAX_RECORDS`]): past that, the oldest half is
//! folded into a floor below which every object counts as purged — never fewer
//! objects than asked, at worst more. With a disk tier the records are appended
//! to `purges.log` before the purge is acknowledged, so a restarted edge purges
//! the files stored before them; the log is emptied once the start-up scan has
//! applied it.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

/// Most purge records kept before the oldest half is folded into the floor.
pub(crate) const MAX_RECORDS: usize = 100_000;

/// What one purge removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeTarget {
    /// Every object whose canonical path starts with this prefix (ending in `/`).
    Prefix(String),
    /// The object at exactly this canonical path.
    Path(String),
    /// Everything.
    All,
}

impl PurgeTarget {
    /// A control-plane prefix: one ending in `/` covers the tree under it, any other is one path.
    pub(crate) fn from_prefix(prefix: &str) -> PurgeTarget {
        if prefix.ends_with('/') {
            PurgeTarget::Prefix(prefix.to_owned())
        } else {
            PurgeTarget::Path(prefix.to_owned())
        }
    }

    /// The canonical path or prefix it names (`*` for everything), for logs.
    pub fn path(&self) -> &str {
        match self {
            PurgeTarget::Prefix(p) | PurgeTarget::Path(p) => p,
            PurgeTarget::All => "*",
        }
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            PurgeTarget::Prefix(_) => "prefix",
            PurgeTarget::Path(_) => "path",
            PurgeTarget::All => "all",
        }
    }
}

/// The purge records and the store's sequence numbers.
#[derive(Debug)]
pub(crate) struct PurgeIndex {
    next: AtomicU64,
    /// Sequence number of the newest purge (0: none since start).
    newest: AtomicU64,
    records: RwLock<Records>,
    log: Mutex<Option<PathBuf>>,
}

#[derive(Debug, Default)]
struct Records {
    by_path: HashMap<Box<str>, u64>,
    order: VecDeque<(Box<str>, u64)>,
    /// Objects with a lower sequence number are purged.
    floor: u64,
}

impl PurgeIndex {
    /// An empty index; with a disk tier, `log` is replayed (its records apply to the files
    /// the start-up scan finds) and appended to from then on.
    pub(crate) fn new(log: Option<&Path>) -> PurgeIndex {
        let index = PurgeIndex {
            next: AtomicU64::new(1),
            newest: AtomicU64::new(0),
            records: RwLock::new(Records::default()),
            log: Mutex::new(log.map(Path::to_owned)),
        };
        if let Some(path) = log
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for line in text.lines() {
                let mut f = line.splitn(3, ' ');
                let (Some(kind), Some(seq)) = (f.next(), f.next().and_then(|s| s.parse::<u64>().ok())) else {
                    continue;
                };
                let target = match (kind, f.next()) {
                    ("A", _) => PurgeTarget::All,
                    ("P", Some(p)) => PurgeTarget::Prefix(p.to_owned()),
                    ("E", Some(p)) => PurgeTarget::Path(p.to_owned()),
                    _ => continue,
                };
                index.next.fetch_max(seq + 1, Ordering::Relaxed);
                index.record(&target, seq);
            }
        }
        index
    }

    /// The next store sequence number (one per fill and per purge).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The start-up scan is done: sequence numbers continue above `max_seq`, and the
    /// replayed records (already applied to every file) are dropped with the log.
    pub(crate) fn loaded(&self, max_seq: u64) {
        self.next.fetch_max(max_seq + 1, Ordering::Relaxed);
        *self.records.write().unwrap_or_else(PoisonError::into_inner) = Records::default();
        self.newest.store(0, Ordering::Relaxed);
        if let Some(log) = self.log.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let _ = std::fs::write(log, b"");
        }
    }

    /// Applies one purge: from now on no lookup returns an object it matches.
    /// Returns its sequence number.
    pub(crate) fn purge(&self, target: &PurgeTarget) -> u64 {
        let seq = self.next_seq();
        if let Some(log) = self.log.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let line = match target {
                PurgeTarget::All => format!("A {seq}\n"),
                PurgeTarget::Prefix(p) => format!("P {seq} {p}\n"),
                PurgeTarget::Path(p) => format!("E {seq} {p}\n"),
            };
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = appended {
                tracing::warn!(error = %e, "cache.purge_log_failed");
            }
        }
        self.record(target, seq);
        seq
    }

    fn record(&self, target: &PurgeTarget, seq: u64) {
        let mut r = self.records.write().unwrap_or_else(PoisonError::into_inner);
        match target {
            PurgeTarget::All => r.floor = r.floor.max(seq),
            PurgeTarget::Prefix(p) | PurgeTarget::Path(p) => {
                let p: Box<str> = p.as_str().into();
                let e = r.by_path.entry(p.clone()).or_insert(0);
                *e = (*e).max(seq);
                r.order.push_back((p, seq));
                if r.order.len() > MAX_RECORDS {
                    fold_oldest_half(&mut r);
                }
            }
        }
        drop(r);
        self.newest.fetch_max(seq, Ordering::Release);
    }

    /// Whether an object stored at `seq` under `path` has been purged since.
    pub(crate) fn is_purged(&self, path: &str, seq: u64) -> bool {
        if seq > self.newest.load(Ordering::Acquire) {
            return false;
        }
        let r = self.records.read().unwrap_or_else(PoisonError::into_inner);
        if seq < r.floor {
            return true;
        }
        if r.by_path.is_empty() {
            return false;
        }
        let newer = |p: &str| r.by_path.get(p).is_some_and(|&s| s > seq);
        newer(path) || path.bytes().enumerate().filter(|&(_, b)| b == b'/').any(|(i, _)| newer(&path[..=i]))
    }

    /// Records held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.read().unwrap_or_else(PoisonError::into_inner).by_path.len()
    }
}

fn fold_oldest_half(r: &mut Records) {
    let n = r.order.len() / 2;
    for _ in 0..n {
        if let Some((p, seq)) = r.order.pop_front() {
            r.floor = r.floor.max(seq + 1);
            if r.by_path.get(&p) == Some(&seq) {
                r.by_path.remove(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_paths_and_all() {
        let p = PurgeIndex::new(None);
        let seg = p.next_seq();
        let other = p.next_seq();
        assert!(!p.is_purged("/vod/abc/v1/seg3.ts", seg));
        p.purge(&PurgeTarget::from_prefix("/vod/abc/"));
        assert!(p.is_purged("/vod/abc/v1/seg3.ts", seg));
        assert!(p.is_purged("/vod/abc/", seg));
        assert!(!p.is_purged("/vod/abcd/seg3.ts", other), "prefixes match whole segments");
        assert!(!p.is_purged("/vod/ab", other));
        let after = p.next_seq();
        assert!(!p.is_purged("/vod/abc/v1/seg3.ts", after), "stored after the purge");
        p.purge(&PurgeTarget::from_prefix("/vod/x/seg1.ts"));
        assert!(p.is_purged("/vod/x/seg1.ts", after));
        assert!(!p.is_purged("/vod/x/seg2.ts", after));
        assert!(!p.is_purged("/vod/x/seg1.tsx", after));
        let late = p.next_seq();
        p.purge(&PurgeTarget::All);
        assert!(p.is_purged("/anything", late));
        assert!(!p.is_purged("/anything", p.next_seq()));
    }

    #[test]
    fn records_are_bounded_and_never_purge_less() {
        let p = PurgeIndex::new(None);
        let old = p.next_seq();
        for i in 0..MAX_RECORDS + 1 {
            p.purge(&PurgeTarget::Path(format!("/p/{i}")));
        }
        assert!(p.len() <= MAX_RECORDS);
        assert!(p.is_purged("/p/0", old), "folded into the floor");
        assert!(p.is_purged(&format!("/p/{MAX_RECORDS}"), old));
        assert!(!p.is_purged("/p/0", p.next_seq()));
    }

    #[test]
    fn the_log_survives_a_restart_until_the_scan_applied_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("purges.log");
        let p = PurgeIndex::new(Some(&log));
        let before = p.next_seq();
        p.purge(&PurgeTarget::from_prefix("/vod/abc/"));
        drop(p);
        let p = PurgeIndex::new(Some(&log));
        assert!(p.is_purged("/vod/abc/seg.ts", before));
        assert!(p.next_seq() > before + 1, "sequence numbers continue above the log's");
        p.loaded(500);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        assert!(p.next_seq() > 500);
    }
}
