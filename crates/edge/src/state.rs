//! The edge's verification state — key ring and revocation set — and the static
//! state file it is loaded from.
//!
//! The state is immutable once built and published through an
//! `Arc<ArcSwap<State>>`: every request reads it lock-free, and a reload swaps in
//! a whole new version. Until edges sync from the control plane, the state comes
//! from a JSON file (a supported mode for air-gapped edges), reloaded on SIGHUP or
//! when the file changes; a bad file keeps the old state, logs the error and counts
//! it in `stile_edge_state_reloads_total{result="error"}`.
//!
//! File format (normative copy in `docs/edge.md`):
//!
//! ```json
//! { "version": 7,
//!   "generated_at": 1700000000,
//!   "keys": [{ "id": 1, "secret": "<base64url, 32 bytes>" }],
//!   "revocations": [
//!     { "kind": "token_id", "value": "0123456789abcdef", "expires_at": 1700003600 },
//!     { "kind": "subject", "value": "viewer-42", "issued_before": 1700000000 },
//!     { "kind": "prefix", "value": "/vod/abc/", "issued_before": 1700000000 },
//!     { "kind": "key", "value": "3" } ] }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine;
use serde::{Deserialize, Serialize};
use stile_token::{KeyRing, SecretKey, TokenId};

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::revocation::{Revocations, RevocationsBuilder};

/// One version of everything a request is verified against.
#[derive(Debug, Default)]
pub struct State {
    /// Monotonic version of this state (from the file, later from the control plane).
    pub version: u64,
    /// Keys that verify.
    pub keys: KeyRing,
    /// Revocations in force.
    pub revocations: Revocations,
    /// When this state was last known current, Unix seconds: the file's `generated_at`,
    /// else when it was loaded. Staleness is measured from here (or from `live`).
    pub fresh_at: u64,
    /// When the state's source last confirmed it current (sync mode: every message
    /// from the control plane), shared by every version built from that source so
    /// heartbeats need not rebuild the state. 0 in file mode.
    pub live: Liveness,
}

impl State {
    /// When this state was last known current: the later of `fresh_at` and `live`.
    #[inline]
    pub fn fresh_at_now(&self) -> u64 {
        self.fresh_at.max(self.live.get())
    }
}

/// A shared, updatable "last confirmed current" time, Unix seconds.
#[derive(Clone, Debug, Default)]
pub struct Liveness(Arc<AtomicU64>);

impl Liveness {
    /// The time, Unix seconds (0: never).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves the time forward (never backward).
    pub fn touch(&self, now: u64) {
        self.0.fetch_max(now, Ordering::Relaxed);
    }
}

/// The state shared by the proxy, the admin listener and the reloader.
#[derive(Debug)]
pub struct SharedState {
    current: ArcSwap<State>,
    ready: AtomicBool,
    /// Sync mode with `stale_policy = "deny"`: (max age, clock) — a stale edge is not ready.
    stale_guard: OnceLock<(u64, SharedClock)>,
}

impl SharedState {
    /// A handle holding `state`, ready when `ready` is true.
    pub fn new(state: State, ready: bool) -> Arc<SharedState> {
        Arc::new(SharedState {
            current: ArcSwap::from_pointee(state),
            ready: AtomicBool::new(ready),
            stale_guard: OnceLock::new(),
        })
    }

    /// The current state, without locking. Hold the guard for one request only.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<State>> {
        self.current.load()
    }

    /// Publishes a new state and marks the edge ready.
    pub fn store(&self, state: State) {
        self.current.store(Arc::new(state));
        self.ready.store(true, Ordering::Release);
    }

    /// Whether a state has been loaded (`/readyz`) and, when a stale guard is set,
    /// is not older than its limit.
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        match self.stale_guard.get() {
            Some((max_age, clock)) => clock.now() <= self.load().fresh_at_now().saturating_add(*max_age),
            None => true,
        }
    }

    /// Makes readiness also require a state younger than `max_age` seconds (sync mode
    /// with `stale_policy = "deny"`: a stale edge denies everything, so it is not ready).
    pub fn set_stale_guard(&self, max_age: u64, clock: SharedClock) {
        let _ = self.stale_guard.set((max_age, clock));
    }
}

/// Why a state file was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Unreadable file.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("invalid state file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error, with line and column.
        source: serde_json::Error,
    },
    /// A well-formed file with a bad value.
    #[error("invalid state file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The JSON state file, as written by operators or tooling (and, in sync mode, the
/// edge's own cache of its applied state).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Version; a reload with a lower version than the one in force is refused.
    pub version: u64,
    /// When the file was produced, Unix seconds; staleness is measured from it.
    #[serde(default)]
    pub generated_at: Option<u64>,
    /// Verification keys.
    pub keys: Vec<KeyEntry>,
    /// Revocations.
    #[serde(default)]
    pub revocations: Vec<RevocationEntry>,
}

/// One key of the state file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id.
    pub id: u32,
    /// The 32-byte secret, base64url (padding optional).
    pub secret: String,
}

/// One revocation of the state file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationEntry {
    /// What `value` names.
    pub kind: RevocationKind,
    /// Token id (16 hex digits), subject, canonical path or prefix, or key id (decimal).
    pub value: String,
    /// For `subject` and `prefix`: tokens issued strictly before this time are revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_before: Option<u64>,
    /// When the entry may be dropped (no token it matches is still valid). 0 or absent: never.
    #[serde(default)]
    pub expires_at: u64,
}

/// `revocations[].kind`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token.
    TokenId,
    /// One viewer's tokens issued before a time.
    Subject,
    /// Tokens for requests under a path prefix (or one exact path) issued before a time.
    Prefix,
    /// Every token signed with a key.
    Key,
}

impl StateFile {
    /// Reads and parses a state file.
    pub fn read(path: &Path) -> Result<StateFile, StateError> {
        let bytes = std::fs::read(path).map_err(|source| StateError::Read { path: path.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.to_owned(), source })
    }

    /// Builds the state, dropping revocations that expired before `now - leeway`.
    pub fn into_state(self, path: &Path, now: u64, leeway: u64) -> Result<State, StateError> {
        let bad = |message: String| StateError::Invalid { path: path.to_owned(), message };
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let mut keys = KeyRing::new();
        for k in &self.keys {
            let raw = engine.decode(k.secret.trim()).map_err(|e| bad(format!("key {}: secret: {e}", k.id)))?;
            let secret = SecretKey::from_slice(&raw)
                .ok_or_else(|| bad(format!("key {}: secret must be 32 bytes, got {}", k.id, raw.len())))?;
            if keys.contains(k.id) {
                return Err(bad(format!("key {} listed twice", k.id)));
            }
            keys.insert(k.id, &secret);
        }
        let prune_before = now.saturating_sub(leeway);
        let n_ids = self.revocations.iter().filter(|r| r.kind == RevocationKind::TokenId).count();
        let mut b = RevocationsBuilder::with_capacity(n_ids);
        for (i, r) in self.revocations.iter().enumerate() {
            if r.expires_at != 0 && r.expires_at < prune_before && r.kind != RevocationKind::TokenId {
                continue;
            }
            let before = || r.issued_before.ok_or_else(|| bad(format!("revocations[{i}]: issued_before is required")));
            match r.kind {
                RevocationKind::TokenId => {
                    let id = TokenId::from_hex(&r.value)
                        .ok_or_else(|| bad(format!("revocations[{i}]: token id must be 16 hex digits")))?;
                    b.token_id(id, r.expires_at);
                }
                RevocationKind::Subject => {
                    b.subject(&r.value, before()?);
                }
                RevocationKind::Prefix => {
                    if !stile_token::is_canonical(&r.value) {
                        return Err(bad(format!("revocations[{i}]: {:?} is not a canonical path", r.value)));
                    }
                    b.path(&r.value, before()?);
                }
                RevocationKind::Key => {
                    let id = r.value.parse().map_err(|_| bad(format!("revocations[{i}]: key id must be a u32")))?;
                    b.key(id);
                }
            }
        }
        Ok(State {
            version: self.version,
            keys,
            revocations: b.build(prune_before),
            fresh_at: self.generated_at.unwrap_or(now),
            live: Liveness::default(),
        })
    }
}

/// Loads a state file into a [`State`] (startup and reloads).
pub fn load_file(path: &Path, now: u64, leeway: u64) -> Result<State, StateError> {
    StateFile::read(path)?.into_state(path, now, leeway)
}

/// Reloads the state file on SIGHUP and whenever its modification time or size changes.
#[derive(Debug)]
pub struct FileReloader {
    /// The file.
    pub path: PathBuf,
    /// Poll interval.
    pub poll: Duration,
    /// Revocation leeway (the token leeway) used when pruning.
    pub leeway: u64,
    /// Where to publish.
    pub shared: Arc<SharedState>,
    /// Metrics to update.
    pub metrics: Arc<Metrics>,
    /// Time source.
    pub clock: SharedClock,
}

impl FileReloader {
    /// Re-reads the file; on success publishes it, on failure keeps the old state.
    pub fn reload(&self, why: &'static str) -> bool {
        let now = self.clock.now();
        match load_file(&self.path, now, self.leeway) {
            Ok(state) => {
                let old = self.shared.load().version;
                if state.version < old {
                    tracing::error!(
                        state.file = %self.path.display(), state.version = state.version, state.current = old,
                        trigger = why, "state reload refused: version goes backwards"
                    );
                    self.metrics.state_reload(false);
                    return false;
                }
                self.metrics.observe_state(&state);
                tracing::info!(
                    state.file = %self.path.display(), state.version = state.version,
                    state.revocations = state.revocations.len(), trigger = why, "state reloaded"
                );
                self.shared.store(state);
                self.metrics.state_reload(true);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, trigger = why, "state reload failed; keeping the previous state");
                self.metrics.state_reload(false);
                false
            }
        }
    }

    /// Runs until `shutdown` flips to true.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGHUP handler; relying on file polling");
                None
            }
        };
        let mut seen = stamp(&self.path);
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => if *shutdown.borrow() { return },
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    seen = stamp(&self.path);
                    self.reload("sighup");
                }
                _ = tick.tick() => {
                    let now = stamp(&self.path);
                    if now != seen {
                        seen = now;
                        self.reload("file_changed");
                    }
                    self.metrics.observe_age(self.clock.now(), self.shared.load().fresh_at);
                }
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE";

    fn parse(json: &str) -> Result<State, String> {
        let f: StateFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        f.into_state(Path::new("s.json"), 1_000, 5).map_err(|e| e.to_string())
    }

    #[test]
    fn good_file_builds_state() {
        let s = parse(&format!(
            r#"{{"version":3,"keys":[{{"id":1,"secret":"{SECRET}"}}],"revocations":[
            {{"kind":"token_id","value":"00000000000000ff","expires_at":2000}},
            {{"kind":"token_id","value":"00000000000000fe","expires_at":10}},
            {{"kind":"subject","value":"v","issued_before":900}},
            {{"kind":"prefix","value":"/vod/a/","issued_before":900}},
            {{"kind":"key","value":"2"}}]}}"#
        ))
        .unwrap();
        assert_eq!(s.version, 3);
        assert!(s.keys.contains(1));
        assert_eq!(s.fresh_at, 1_000);
        let c = s.revocations.counts();
        assert_eq!((c.token_ids, c.subjects, c.paths, c.keys), (1, 1, 1, 1));
    }

    #[test]
    fn bad_files_are_refused() {
        for (json, needle) in [
            ("{", "EOF"),
            (r#"{"version":1,"keys":[{"id":1,"secret":"AAAA"}]}"#, "32 bytes"),
            (r#"{"version":1,"keys":[{"id":1,"secret":"!!"}]}"#, "secret"),
            (r#"{"version":1,"keys":[],"revocations":[{"kind":"token_id","value":"xyz"}]}"#, "16 hex"),
            (r#"{"version":1,"keys":[],"revocations":[{"kind":"subject","value":"v"}]}"#, "issued_before"),
            (
                r#"{"version":1,"keys":[],"revocations":[{"kind":"prefix","value":"/a/../","issued_before":1}]}"#,
                "canonical",
            ),
            (r#"{"version":1,"keys":[],"revocations":[{"kind":"key","value":"x"}]}"#, "u32"),
            (r#"{"version":1,"keys":[],"revocations":[{"kind":"ip","value":"x"}]}"#, "unknown variant"),
            (r#"{"version":1,"keys":[],"extra":1}"#, "unknown field"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
