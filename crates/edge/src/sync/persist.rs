//! The sync client's persistence: the applied state cached in `state.file`
//! (a state file, written atomically, 0600: it holds key secrets) plus the
//! delta journal beside it ([`super::journal`]).
//!
//! - Before an ACK: the batch's deltas are appended to the journal, or after a
//!   snapshot the whole file is written (no fsync: it must survive the
//!   process, which is what an ACK promises).
//! - Periodically (at most every `sync.cache_interval_ms`) and at shutdown:
//!   the whole file is written with fsync, off the receive loop, and the
//!   journal segments it covers are deleted.
//!
//! [`CacheWriter`] is the receive loop's side; [`WriteLane`] performs the full
//! writes, in order, one at a time, on the blocking pool.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stile_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use super::image::{self, CacheImage};
use super::journal::{self, Journal};
use super::metrics::SyncMetrics;
use super::model::Model;
use crate::state::{Liveness, State, StateError, StateFile};

/// What the edge starts from in sync mode.
#[derive(Debug)]
pub(crate) struct Initial {
    /// The state to serve first (empty and not ready without a cache).
    pub(crate) state: State,
    /// Whether it came from the cache file.
    pub(crate) from_cache: bool,
    /// The model behind it.
    pub(crate) model: Model,
    /// Its liveness handle, shared with every later state.
    pub(crate) liveness: Liveness,
}

/// Loads the cache file, if there is a usable one, and replays the deltas
/// journaled after it. A missing file starts empty;
/// an unreadable or invalid one is logged and ignored (the control plane sends
/// a snapshot), since the edge wrote it itself. Nothing is pruned here: the
/// local clock alone may be wrong (see the sync client's prune horizon);
/// expired entries go with the first change applied after a heartbeat.
pub(crate) fn load_cache(path: Option<&Path>) -> Initial {
    let liveness = Liveness::default();
    let empty = |liveness: Liveness| Initial {
        state: State { live: liveness.clone(), ..State::default() },
        from_cache: false,
        model: Model::default(),
        liveness,
    };
    let Some(path) = path else { return empty(liveness) };
    if !path.exists() {
        return empty(liveness);
    }
    let loaded = read_cache(path);
    match loaded {
        Ok((mut model, fresh_at)) => {
            let replayed = journal::replay(path, &mut model);
            let state = model.to_state(fresh_at, &liveness);
            tracing::info!(
                state.cache = %path.display(), state.version = model.version, journal.replayed = replayed,
                "sync.cache_loaded"
            );
            Initial { state, from_cache: true, model, liveness }
        }
        Err(e) => {
            tracing::error!(error = %e, "sync.cache_unusable: starting empty, the control plane will send a snapshot");
            empty(liveness)
        }
    }
}

/// The model a cache file holds and when it was generated: the binary form
/// ([`image`]) or, written by an older edge, the state-file JSON.
fn read_cache(path: &Path) -> Result<(Model, u64), StateError> {
    let io = |source| StateError::Read { path: path.to_owned(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut magic = [0u8; image::MAGIC.len()];
    let binary = std::io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == image::MAGIC;
    drop(f);
    if binary {
        let f = std::fs::File::open(path).map_err(io)?;
        return image::read(std::io::BufReader::with_capacity(1 << 20, f), len, path);
    }
    let file = StateFile::read(path)?;
    let model = Model::from_file(&file, path)?;
    Ok((model, file.generated_at.unwrap_or(0)))
}

/// Why persisting failed.
#[derive(Debug, thiserror::Error)]
enum PersistError {
    /// The cache file could not be written.
    #[error(transparent)]
    Cache(#[from] StateError),
    /// The journal could not be appended to.
    #[error("journal {path}: {source}")]
    Journal { path: PathBuf, source: io::Error },
    /// Covered journal segments could not be deleted.
    #[error("removing journal segments: {0}")]
    Segments(io::Error),
    /// The blocking write task failed.
    #[error("cache task: {0}")]
    Task(tokio::task::JoinError),
    /// The write lane is gone (shutting down).
    #[error("the cache write lane stopped")]
    LaneStopped,
}

/// The cache's two halves: the receive loop's writer and the write lane
/// that performs its full writes. Without a cache path both do nothing.
pub(crate) fn cache(path: Option<PathBuf>, interval: Duration, metrics: SyncMetrics) -> (CacheWriter, WriteLane) {
    let (writes, queue) = mpsc::channel::<FullWrite>(4);
    let lane = Arc::new(LaneState::default());
    // The file on disk is as new as what was loaded: the first full write is due one interval
    // from now (a first snapshot is written before its ACK anyway).
    let writer = CacheWriter {
        journal: path.as_deref().map(Journal::open),
        path: path.clone(),
        interval,
        dirty: false,
        last: Some(tokio::time::Instant::now()),
        writes,
        lane: Arc::clone(&lane),
        metrics: metrics.clone(),
    };
    (writer, WriteLane { path, queue, lane, metrics })
}

/// The receive loop's side of the cache.
#[derive(Debug)]
pub(crate) struct CacheWriter {
    path: Option<PathBuf>,
    interval: Duration,
    /// Applied changes are not in a full write yet.
    dirty: bool,
    /// When the last full write was started.
    last: Option<tokio::time::Instant>,
    journal: Option<Journal>,
    /// To the write lane.
    writes: mpsc::Sender<FullWrite>,
    lane: Arc<LaneState>,
    metrics: SyncMetrics,
}

impl CacheWriter {
    /// The applied state changed: the next periodic write is due.
    pub(crate) fn changed(&mut self) {
        self.dirty = true;
    }

    /// Makes a batch's deltas survive the process before they are ACKed: a
    /// journal append (cost proportional to the deltas), done in place.
    pub(crate) fn persist_deltas(&mut self, deltas: &[pb::Delta]) {
        let Some(path) = &self.path else { return };
        self.dirty = true;
        // A small append to an open file: not worth a blocking-pool hop.
        let result = match self.journal.as_mut().map(|j| j.append(deltas)) {
            Some(Err(source)) => Err(PersistError::Journal { path: path.clone(), source }),
            _ => Ok(()),
        };
        self.report(result);
    }

    /// Makes an applied snapshot survive the process before it is ACKed: the
    /// whole file (`file` builds it), through the write lane so it stays in
    /// order with the periodic writes; it also covers the journal so far.
    pub(crate) async fn persist_snapshot(&mut self, file: impl FnOnce() -> CacheImage) {
        if self.path.is_none() {
            return;
        }
        self.dirty = true;
        let through = self.journal.as_mut().map_or(0, Journal::rotate);
        let (done, written) = oneshot::channel();
        let write = FullWrite { file: file(), durability: Durability::Process, through, done: Some(done) };
        if self.writes.send(write).await.is_err() {
            return;
        }
        let result = written.await.unwrap_or(Err(PersistError::LaneStopped));
        self.report(result);
    }

    /// Starts a full (fsync'd) write when the state changed since the last one,
    /// the interval has passed and none is running; does not wait for it.
    pub(crate) async fn flush_due(&mut self, file: impl FnOnce() -> CacheImage) {
        if self.path.is_none() || !self.take_dirty() {
            return;
        }
        if self.lane.busy.load(Ordering::Acquire) || self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return;
        }
        let _ = self.start_full_write(file(), false).await;
    }

    /// Writes the state now, when it changed, and waits for it (at shutdown).
    pub(crate) async fn flush_now(&mut self, file: impl FnOnce() -> CacheImage) {
        if self.path.is_none() || !self.take_dirty() {
            return;
        }
        if let Some(written) = self.start_full_write(file(), true).await {
            let _ = written.await;
        }
    }

    /// Whether there is something to write (a failed periodic write counts).
    fn take_dirty(&mut self) -> bool {
        if self.lane.failed.swap(false, Ordering::AcqRel) {
            self.dirty = true;
        }
        self.dirty
    }

    async fn start_full_write(
        &mut self,
        file: CacheImage,
        wait: bool,
    ) -> Option<oneshot::Receiver<Result<(), PersistError>>> {
        let through = self.journal.as_mut().map_or(0, Journal::rotate);
        self.dirty = false;
        self.last = Some(tokio::time::Instant::now());
        self.lane.busy.store(true, Ordering::Release);
        let (done, written) = oneshot::channel();
        let write = FullWrite { file, durability: Durability::Disk, through, done: wait.then_some(done) };
        (self.writes.send(write).await.is_ok() && wait).then_some(written)
    }

    fn report(&self, result: Result<(), PersistError>) {
        if let Err(e) = result {
            self.metrics.cache_write(false);
            tracing::error!(error = %e, "sync.cache_write_failed");
        }
    }
}

/// Performs the full cache writes in order: temporary file, fsync when
/// asked, rename, then the journal segments the new file covers go.
#[derive(Debug)]
pub(crate) struct WriteLane {
    path: Option<PathBuf>,
    queue: mpsc::Receiver<FullWrite>,
    lane: Arc<LaneState>,
    metrics: SyncMetrics,
}

impl WriteLane {
    /// Runs until the [`CacheWriter`] is dropped.
    pub(crate) async fn run(mut self) {
        let Some(path) = self.path else { return };
        while let Some(w) = self.queue.recv().await {
            let version = w.file.version();
            let p = path.clone();
            let (file, durability, through) = (w.file, w.durability, w.through);
            let result = tokio::task::spawn_blocking(move || {
                write_cache(&p, file, durability)?;
                journal::remove_through(&p, through).map_err(PersistError::Segments)
            })
            .await
            .unwrap_or_else(|e| Err(PersistError::Task(e)));
            match &result {
                Ok(()) => {
                    self.metrics.cache_write(true);
                    tracing::debug!(state.version = version, "sync.cache_written");
                }
                Err(e) => {
                    self.metrics.cache_write(false);
                    tracing::error!(error = %e, "sync.cache_write_failed");
                    self.lane.failed.store(true, Ordering::Release);
                }
            }
            if durability == Durability::Disk {
                self.lane.busy.store(false, Ordering::Release);
            }
            if let Some(done) = w.done {
                let _ = done.send(result);
            }
        }
    }
}

/// Shared between the receive loop and the write lane.
#[derive(Debug, Default)]
struct LaneState {
    /// A periodic (fsync'd) write is queued or running.
    busy: AtomicBool,
    /// A write failed: the next periodic write retries.
    failed: AtomicBool,
}

/// How far a full write must get before it counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Survives the process (no fsync): enough before an ACK.
    Process,
    /// Survives the machine (fsync before the rename): periodic and final writes.
    Disk,
}

/// One full write of the cache file.
#[derive(Debug)]
struct FullWrite {
    file: CacheImage,
    durability: Durability,
    /// Journal segments up to this one are covered and removed afterwards.
    through: u64,
    /// Told the result, when someone waits.
    done: Option<oneshot::Sender<Result<(), PersistError>>>,
}

/// Writes the cache atomically — the binary form ([`image`]) from
/// [`image::BINARY_FROM_TOKENS`] token ids on, else the state-file JSON: a
/// 0600 temporary file beside it, fsync (for [`Durability::Disk`]), rename.
fn write_cache(path: &Path, file: CacheImage, durability: Durability) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.to_owned(), source };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(&tmp).map_err(err)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, f);
    if file.binary() {
        file.write_to(&mut w).map_err(err)?;
    } else {
        serde_json::to_writer(&mut w, &file.into_file()).map_err(|e| err(io::Error::other(e)))?;
    }
    let f = w.into_inner().map_err(|e| err(e.into_error()))?;
    if durability == Durability::Disk {
        f.sync_all().map_err(err)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_writes_are_private_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let mut m = Model::default();
        let key =
            pb::EdgeKey { key_id: 1, state: pb::KeyState::Active.into(), secret: vec![5; 32], ..Default::default() };
        m.apply_snapshot(&pb::Snapshot { version: 7, keys: vec![key], ..Default::default() }).unwrap();
        write_cache(&path, m.to_image(100), Durability::Disk).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let initial = load_cache(Some(&path));
        assert!(initial.from_cache);
        assert_eq!((initial.state.version, initial.state.fresh_at), (7, 100));
        assert!(initial.state.keys.contains(1));
        std::fs::write(&path, "{").unwrap();
        assert!(!load_cache(Some(&path)).from_cache, "a broken cache is ignored");
        // A binary cache cut short (a full disk, a crash mid-copy) is refused
        // with what is wrong, and the edge starts empty: a snapshot follows.
        let whole = m.to_image(100).encode();
        std::fs::write(&path, &whole[..whole.len() - 2]).unwrap();
        let err = read_cache(&path).unwrap_err().to_string();
        assert!(err.contains("sync cache") && err.contains("truncated or damaged"), "{err}");
        let initial = load_cache(Some(&path));
        assert!(!initial.from_cache);
        assert_eq!(initial.model.version, 0, "version 0: the control plane answers with a snapshot");
        // A cache an older edge wrote (the state-file JSON) still loads.
        std::fs::write(&path, serde_json::to_vec(&m.to_file(100)).unwrap()).unwrap();
        let initial = load_cache(Some(&path));
        assert!(initial.from_cache);
        assert_eq!(initial.model, m);
        assert!(!load_cache(Some(&dir.path().join("none"))).from_cache);
    }

    #[test]
    fn a_large_cache_is_written_in_the_binary_form_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let mut m = Model::default();
        let n = image::BINARY_FROM_TOKENS as u64;
        let revocations = (0..n)
            .map(|i| pb::Revocation {
                version: i + 1,
                target: Some(pb::RevocationTarget {
                    target: Some(pb::revocation_target::Target::TokenId(format!("{:016x}", i * 7_919 + 1))),
                }),
                expires_at: 2_000_000_000,
                ..Default::default()
            })
            .collect();
        m.apply_snapshot(&pb::Snapshot { version: 70, revocations, ..Default::default() }).unwrap();
        write_cache(&path, m.to_image(5), Durability::Process).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], image::MAGIC);
        assert!(bytes.len() < image::BINARY_FROM_TOKENS * 13, "{} bytes", bytes.len());
        let initial = load_cache(Some(&path));
        assert!(initial.from_cache);
        assert_eq!((initial.model, initial.state.fresh_at), (m, 5));
    }

    #[test]
    fn a_failed_write_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary file cannot be created inside a directory that does not exist.
        let path = dir.path().join("missing").join("cache.json");
        let err = write_cache(&path, Model::default().to_image(1), Durability::Process).unwrap_err();
        assert!(matches!(err, StateError::Write { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cannot write state file"), "{err}");
    }
}
