//! The edge's verification state — key ring and revocation set — and the
//! state file it is loaded from.
//!
//! The state is immutable once built and published through an
//! `Arc<ArcSwap<State>>`: every request reads it lock-free, and a reload swaps in
//! a whole new version. It comes from the sync stream ([`crate::sync`]) or, on
//! edges without `[sync]` (air-gapped ones), from a static JSON state file that
//! `reload.rs` re-reads on SIGHUP or when it changes; a bad file keeps the old
//! state, logs the error and counts it in `stile_edge_state_reloads_total{result="error"}`.
//!
//! [`StateFile::decode`] is the one parser of that file format: the file mode's
//! loader, the sync client's cache (which is a state file) and `stile explain
//! --key-file` all read it through there.
//!
//! File format (normative copy in `docs/edge.md`):
//!
//! ```json
//! { "version": 7,
//!   "generated_at": 1700000000,
//!   "keys": [{ "id": 1, "secret": "<base64url, 32 bytes>" },
//!            { "id": 2, "algorithm": "ed25519", "public_key": "<base64url, 32 bytes>",
//!              "session_secret": "<base64url, 32 bytes; optional>" }],
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

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use stile_foreign::{Format, Key, Keys};
use stile_token::{Algorithm, Ed25519Public, KeyId, KeyRing, SecretKey, TokenId, VerifyKey};

use crate::clock::SharedClock;
use crate::revocation::{Revocations, RevocationsBuilder};

/// The state file's encoding of key secrets: base64url, padding optional when
/// read and never written. The one definition, for files and the sync cache.
pub(crate) const SECRET_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One version of everything a request is verified against.
#[derive(Debug, Default)]
pub struct State {
    /// Monotonic version of this state (the file's, or the control plane's change-log version).
    pub version: u64,
    /// Keys that verify.
    pub keys: KeyRing,
    /// Revocations in force.
    pub revocations: Revocations,
    /// Keys of other vendors' link formats (`[[foreign]]`, [`crate::foreign`]).
    pub foreign_keys: ForeignKeys,
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
    pub(crate) fn fresh_at_now(&self) -> u64 {
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
    pub(crate) fn is_ready(&self) -> bool {
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
    pub(crate) fn set_stale_guard(&self, max_age: u64, clock: SharedClock) {
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
    /// The file (the sync cache) could not be written.
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O or encoding error.
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
    /// Keys of other vendors' link formats, as the vendor writes them (in a
    /// synced edge's cache: those the control plane pushed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKeyEntry>,
}

/// One key of the state file: an HMAC-SHA256 key with its secret, or an
/// Ed25519 key with its public key only (an edge never holds an Ed25519
/// private key).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Key id.
    pub id: u32,
    /// `"hmac-sha256"` (the default when absent) or `"ed25519"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// HMAC-SHA256: the 32-byte secret, base64url (padding optional). Absent for Ed25519.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Ed25519: the 32-byte public key, base64url (padding optional). Absent for HMAC-SHA256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Ed25519: the key's 32-byte session secret, base64url (`docs/sessions.md`); without
    /// it the edge neither verifies nor issues sessions of this key's links. Absent for
    /// HMAC-SHA256 (the edge derives it from the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_secret: Option<String>,
}

impl KeyEntry {
    /// The file form of a key.
    pub fn new(id: KeyId, key: &VerifyKey) -> KeyEntry {
        match key {
            VerifyKey::Hmac(secret) => KeyEntry {
                id,
                algorithm: None,
                secret: Some(SECRET_ENCODING.encode(secret.expose())),
                public_key: None,
                session_secret: None,
            },
            VerifyKey::Ed25519(public) => KeyEntry {
                id,
                algorithm: Some(Algorithm::Ed25519.as_str().into()),
                secret: None,
                public_key: Some(SECRET_ENCODING.encode(public.as_bytes())),
                session_secret: None,
            },
            VerifyKey::Ed25519Session(public, session) => KeyEntry {
                id,
                algorithm: Some(Algorithm::Ed25519.as_str().into()),
                secret: None,
                public_key: Some(SECRET_ENCODING.encode(public.as_bytes())),
                session_secret: Some(SECRET_ENCODING.encode(session.expose())),
            },
        }
    }

    /// The key this entry holds, checked; else why not.
    pub fn decode(&self) -> Result<VerifyKey, String> {
        let id = self.id;
        let algorithm = match self.algorithm.as_deref() {
            None => Algorithm::HmacSha256,
            Some(name) => Algorithm::parse(name)
                .ok_or_else(|| format!("key {id}: unknown algorithm {name:?} (hmac-sha256 or ed25519)"))?,
        };
        let bytes = |field: &str, text: &Option<String>| -> Result<Vec<u8>, String> {
            let text = text.as_deref().ok_or_else(|| format!("key {id}: {algorithm} key without its {field}"))?;
            SECRET_ENCODING.decode(text.trim()).map_err(|e| format!("key {id}: {field}: {e}"))
        };
        match algorithm {
            Algorithm::HmacSha256 => {
                if self.public_key.is_some() || self.session_secret.is_some() {
                    return Err(format!(
                        "key {id}: an hmac-sha256 key has no public_key and no session_secret (derived from its secret)"
                    ));
                }
                let raw = bytes("secret", &self.secret)?;
                let secret = SecretKey::from_slice(&raw)
                    .ok_or_else(|| format!("key {id}: secret must be 32 bytes, got {}", raw.len()))?;
                Ok(VerifyKey::Hmac(secret))
            }
            Algorithm::Ed25519 => {
                if self.secret.is_some() {
                    return Err(format!("key {id}: an ed25519 key carries its public_key only, never a secret"));
                }
                let raw = bytes("public_key", &self.public_key)?;
                let public = Ed25519Public::from_slice(&raw)
                    .ok_or_else(|| format!("key {id}: public_key must be 32 bytes, got {}", raw.len()))?;
                KeyRing::new().insert_ed25519(id, &public).map_err(|e| format!("key {id}: public_key: {e}"))?;
                if self.session_secret.is_none() {
                    return Ok(VerifyKey::Ed25519(public));
                }
                let raw = bytes("session_secret", &self.session_secret)?;
                let session = SecretKey::from_slice(&raw)
                    .ok_or_else(|| format!("key {id}: session_secret must be 32 bytes, got {}", raw.len()))?;
                Ok(VerifyKey::Ed25519Session(public, session))
            }
        }
    }
}

/// One revocation of the state file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl RevocationKind {
    /// The file's name for the kind (`token_id`, `subject`, `prefix`, `key`).
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::TokenId => "token_id",
            RevocationKind::Subject => "subject",
            RevocationKind::Prefix => "prefix",
            RevocationKind::Key => "key",
        }
    }
}

/// A state file's contents, checked: keys decoded, every revocation valid
/// (token ids in lower case). What [`StateFile::decode`] returns.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    /// The file's version.
    pub version: u64,
    /// The file's `generated_at`.
    pub generated_at: Option<u64>,
    /// The keys, each id once, checked (an Ed25519 public key is a valid, non-weak point).
    pub keys: Vec<(KeyId, VerifyKey)>,
    /// The revocations, in file order.
    pub revocations: Vec<RevocationEntry>,
    /// The foreign keys, by format.
    pub foreign_keys: ForeignKeys,
}

impl StateFile {
    /// Reads and parses a state file.
    pub fn read(path: &Path) -> Result<StateFile, StateError> {
        let bytes = std::fs::read(path).map_err(|source| StateError::Read { path: path.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { path: path.to_owned(), source })
    }

    /// Checks every key and revocation (`path` names the file in errors): the
    /// one set of rules for state files, sync caches and `stile explain`.
    pub fn decode(&self, path: &Path) -> Result<Decoded, StateError> {
        let bad = |message: String| StateError::Invalid { path: path.to_owned(), message };
        let mut keys: Vec<(KeyId, VerifyKey)> = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            let key = k.decode().map_err(bad)?;
            if keys.iter().any(|(id, _)| *id == k.id) {
                return Err(bad(format!("key {} listed twice", k.id)));
            }
            keys.push((k.id, key));
        }
        let mut revocations = Vec::with_capacity(self.revocations.len());
        for (i, r) in self.revocations.iter().enumerate() {
            let entry = r.checked().map_err(|why| bad(format!("revocations[{i}]: {why}")))?;
            revocations.push(entry);
        }
        let foreign_keys = ForeignKeys::decode(&self.foreign_keys).map_err(bad)?;
        Ok(Decoded { version: self.version, generated_at: self.generated_at, keys, revocations, foreign_keys })
    }

    /// Builds the state, dropping revocations that expired before `now - leeway`.
    pub fn into_state(self, path: &Path, now: u64, leeway: u64) -> Result<State, StateError> {
        Ok(self.decode(path)?.into_state(now, leeway))
    }
}

impl Decoded {
    /// The state these keys and revocations make, as the file mode builds it:
    /// revocations that expired before `now - leeway` are left out, and the
    /// state counts as current from `generated_at` (else from `now`).
    pub fn into_state(self, now: u64, leeway: u64) -> State {
        State {
            version: self.version,
            keys: key_ring(self.keys.iter().map(|(id, k)| (*id, k))),
            revocations: revocation_set(&self.revocations, now.saturating_sub(leeway)),
            foreign_keys: self.foreign_keys,
            fresh_at: self.generated_at.unwrap_or(now),
            live: Liveness::default(),
        }
    }
}

/// The ring of checked keys ([`KeyEntry::decode`] refused every Ed25519 key a ring would).
pub(crate) fn key_ring<'a>(keys: impl IntoIterator<Item = (KeyId, &'a VerifyKey)>) -> KeyRing {
    let mut ring = KeyRing::new();
    for (id, key) in keys {
        if let Err(e) = ring.insert_key(id, key) {
            tracing::error!(key.id = id, error = %e, "state.key_refused");
        }
    }
    ring
}

impl RevocationEntry {
    /// This entry if it is valid, with a token id in lower case; else why not.
    pub fn checked(&self) -> Result<RevocationEntry, String> {
        let mut value = self.value.clone();
        match self.kind {
            RevocationKind::TokenId => {
                let id = TokenId::from_hex(&self.value).ok_or("token id must be 16 hex digits")?;
                value = id.to_string();
            }
            RevocationKind::Subject => {
                self.issued_before.ok_or("issued_before is required")?;
            }
            RevocationKind::Prefix => {
                self.issued_before.ok_or("issued_before is required")?;
                if !stile_token::is_canonical(&self.value) {
                    return Err(format!("{:?} is not a canonical path", self.value));
                }
            }
            RevocationKind::Key => {
                self.value.parse::<KeyId>().map_err(|_| "key id must be a u32")?;
            }
        }
        Ok(RevocationEntry { kind: self.kind, value, issued_before: self.issued_before, expires_at: self.expires_at })
    }
}

/// The revocation set of checked entries (see [`RevocationEntry::checked`]),
/// without those that expired before `prune_before`.
pub fn revocation_set(entries: &[RevocationEntry], prune_before: u64) -> Revocations {
    let ids = entries.iter().filter(|r| r.kind == RevocationKind::TokenId).count();
    let mut b = RevocationsBuilder::with_capacity(ids);
    for r in entries {
        // Token ids keep their expiry in the set, which drops them when it is built.
        if r.expires_at != 0 && r.expires_at < prune_before && r.kind != RevocationKind::TokenId {
            continue;
        }
        add_revocation(&mut b, r.kind, &r.value, r.issued_before, r.expires_at);
    }
    b.build(prune_before)
}

/// Adds one checked revocation to a set being built (values that do not parse
/// are skipped: checked entries always do).
pub(crate) fn add_revocation(
    b: &mut RevocationsBuilder,
    kind: RevocationKind,
    value: &str,
    issued_before: Option<u64>,
    expires_at: u64,
) {
    match kind {
        RevocationKind::TokenId => {
            if let Some(id) = TokenId::from_hex(value) {
                b.token_id(id, expires_at);
            }
        }
        RevocationKind::Subject => {
            b.subject(value, issued_before.unwrap_or(0));
        }
        RevocationKind::Prefix => {
            b.path(value, issued_before.unwrap_or(0));
        }
        RevocationKind::Key => {
            if let Ok(id) = value.parse() {
                b.key(id);
            }
        }
    }
}

/// The foreign keys of one state, by format.
#[derive(Clone, Debug, Default)]
pub struct ForeignKeys {
    by_format: [Keys; Format::ALL.len()],
}

impl ForeignKeys {
    /// The keys of a format.
    pub fn get(&self, format: Format) -> &Keys {
        &self.by_format[Format::ALL.iter().position(|f| *f == format).unwrap_or(0)]
    }

    /// How many keys in all.
    pub fn len(&self) -> usize {
        self.by_format.iter().map(Keys::len).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks and groups the state file's entries (at most 8 keys a format, names
    /// unique within a format).
    pub fn decode(entries: &[ForeignKeyEntry]) -> Result<ForeignKeys, String> {
        let mut grouped: [Vec<Key>; Format::ALL.len()] = Default::default();
        for (i, e) in entries.iter().enumerate() {
            let format = Format::from_name(&e.format).ok_or_else(|| format!("foreign_keys[{i}]: unknown format"))?;
            let key = e.key().map_err(|why| format!("foreign_keys[{i}]: {why}"))?;
            grouped[Format::ALL.iter().position(|f| *f == format).unwrap_or(0)].push(key);
        }
        let mut out = ForeignKeys::default();
        for (slot, keys) in out.by_format.iter_mut().zip(grouped) {
            *slot = Keys::new(keys).map_err(|e| format!("foreign_keys: {e}"))?;
        }
        Ok(out)
    }
}

/// One foreign key of the state file: `{"format": "akamai", "name": "primary",
/// "key": "52a1…"}`, the key written as the vendor writes it — hex (Akamai),
/// base64 or base64url (Cloud CDN; Media CDN HMAC keys), `ed25519:` + base64 (a Media
/// CDN public key), the text itself (Bunny, nginx).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForeignKeyEntry {
    /// The format's name.
    pub format: String,
    /// The key's name as the vendor names it (Google `KeyName`; free for the others).
    pub name: String,
    /// The key.
    pub key: String,
}

impl std::fmt::Debug for ForeignKeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ForeignKeyEntry({}, {:?}, <redacted>)", self.format, self.name)
    }
}

impl ForeignKeyEntry {
    fn key(&self) -> Result<Key, String> {
        let format = Format::from_name(&self.format).ok_or("unknown format")?;
        Key::parse_as(format, &self.name, &self.key).map_err(|e| e.to_string())
    }
}

/// Loads a state file into a [`State`] (startup and reloads).
pub(crate) fn load_file(path: &Path, now: u64, leeway: u64) -> Result<State, StateError> {
    StateFile::read(path)?.into_state(path, now, leeway)
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
            (
                &format!(r#"{{"version":1,"keys":[{{"id":1,"secret":"{SECRET}"}},{{"id":1,"secret":"{SECRET}"}}]}}"#),
                "twice",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
            // The sync cache is read by the same codec: the same files are refused for the same reason.
            if let Ok(file) = serde_json::from_str::<StateFile>(json) {
                let err = crate::sync::Model::from_file(&file, Path::new("s.json")).unwrap_err().to_string();
                assert!(err.contains(needle), "cache {json}: {err}");
            }
        }
    }

    /// Ed25519 keys: the public key only. A weak point, a non-point, a secret
    /// beside it, a missing public key or an unknown algorithm is refused, by
    /// the file loader and the sync cache alike; the file form round-trips.
    #[test]
    fn ed25519_keys_are_public_keys_only() {
        use base64::Engine as _;
        let public = stile_token::Ed25519Secret::from_bytes([3; 32]).public();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let good = format!(
            r#"{{"version":1,"keys":[{{"id":1,"secret":"{SECRET}"}},{{"id":2,"algorithm":"ed25519","public_key":"{}"}}]}}"#,
            b64(public.as_bytes())
        );
        let s = parse(&good).unwrap();
        assert_eq!(s.keys.algorithm(1), Some(Algorithm::HmacSha256));
        assert_eq!(s.keys.ed25519_public(2), Some(public));
        let file: StateFile = serde_json::from_str(&good).unwrap();
        let decoded = file.decode(Path::new("s.json")).unwrap();
        let again: Vec<KeyEntry> = decoded.keys.iter().map(|(id, k)| KeyEntry::new(*id, k)).collect();
        assert_eq!(serde_json::to_value(&again).unwrap(), serde_json::to_value(&file.keys).unwrap());
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        let ed = |fields: &str| format!(r#"{{"version":1,"keys":[{{"id":2,{fields}}}]}}"#);
        for (json, needle) in [
            (ed(&format!(r#""algorithm":"ed25519","public_key":"{}""#, b64(&identity))), "small order"),
            (ed(&format!(r#""algorithm":"ed25519","public_key":"{}""#, b64(&not_a_point))), "not a point"),
            (ed(&format!(r#""algorithm":"ed25519","public_key":"{}""#, b64(&[1; 31]))), "32 bytes, got 31"),
            (
                ed(&format!(r#""algorithm":"ed25519","public_key":"{}","secret":"{SECRET}""#, b64(public.as_bytes()))),
                "never a secret",
            ),
            (ed(r#""algorithm":"ed25519""#), "without its public_key"),
            (ed(&format!(r#""algorithm":"rsa","secret":"{SECRET}""#)), "unknown algorithm"),
            (ed(&format!(r#""secret":"{SECRET}","public_key":"{}""#, b64(public.as_bytes()))), "has no public_key"),
        ] {
            let err = parse(&json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
            let file: StateFile = serde_json::from_str(&json).unwrap();
            let err = crate::sync::Model::from_file(&file, Path::new("s.json")).unwrap_err().to_string();
            assert!(err.contains(needle), "cache {json}: {err}");
        }
    }

    #[test]
    fn decode_normalises_and_the_set_prunes() {
        let json = format!(
            r#"{{"version":2,"keys":[{{"id":4,"secret":"{SECRET}="}}],"revocations":[
            {{"kind":"token_id","value":"00000000000000AB","expires_at":10}},
            {{"kind":"subject","value":"v","issued_before":900,"expires_at":10}},
            {{"kind":"subject","value":"w","issued_before":900,"expires_at":2000}}]}}"#
        );
        let file: StateFile = serde_json::from_str(&json).unwrap();
        let d = file.decode(Path::new("s.json")).unwrap();
        assert_eq!(d.keys.len(), 1, "padding is optional");
        assert_eq!(d.revocations[0].value, "00000000000000ab", "token ids in lower case");
        assert_eq!(revocation_set(&d.revocations, 0).len(), 3);
        let c = revocation_set(&d.revocations, 100).counts();
        assert_eq!((c.token_ids, c.subjects), (0, 1), "entries expired before the horizon are left out");
        assert_eq!(d.into_state(105, 5).revocations.len(), 1);
    }
}
