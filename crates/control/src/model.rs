//! The control plane's domain types, independent of protobuf and of the
//! storage backend. `convert` maps them to and from `stile.v1` messages.

use std::fmt;

use serde::{Deserialize, Serialize};
use stile_token::{Algorithm, Ed25519Secret, KEY_LEN, KeyId, KeyRing, SecretKey, VerifyKey};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A backend that mints links (audience access).
    Minter,
    /// An SRE: revocations, keys, assets, audit, fleet (operator privileges).
    Operator,
    /// An edge proxy: the sync stream only.
    Edge,
    /// Everything.
    Admin,
}

impl Role {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Minter => "minter",
            Role::Operator => "operator",
            Role::Edge => "edge",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a name (API key, asset, edge) is 1..=64 characters of `[a-z0-9._-]`.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Publication state of an asset; minting requires [`AssetState::Published`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetState {
    /// Created, content not ready.
    Draft,
    /// Content ready, not released.
    Ready,
    /// Released: links can be minted.
    Published,
    /// Withdrawn for good (terminal).
    Archived,
}

impl AssetState {
    /// Whether an asset may move from `self` to `to`: forward along
    /// Draft → Ready → Published, one step back (Ready → Draft, Published →
    /// Ready: unpublish), and from any live state to Archived, which is final.
    pub(crate) fn can_move_to(self, to: AssetState) -> bool {
        use AssetState::*;
        matches!(
            (self, to),
            (Draft, Ready)
                | (Ready, Draft)
                | (Ready, Published)
                | (Published, Ready)
                | (Draft | Ready | Published, Archived)
        )
    }

    /// The upper-case name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            AssetState::Draft => "DRAFT",
            AssetState::Ready => "READY",
            AssetState::Published => "PUBLISHED",
            AssetState::Archived => "ARCHIVED",
        }
    }
}

/// A path prefix on the origin with a publication state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    /// Id, `[a-z0-9._-]{1,64}`.
    pub id: String,
    /// Canonical path prefix ending in `/`.
    pub path: String,
    /// Entry manifest relative to `path`; may be empty.
    pub entry: String,
    /// Publication state.
    pub state: AssetState,
    /// Incremented by every change; starts at 1.
    pub revision: u64,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Last change, Unix seconds.
    pub updated_at: u64,
    /// Actor of the last change.
    pub updated_by: String,
}

/// State of a signing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Being distributed to edges; verifies, does not mint yet.
    Pending,
    /// The minting key.
    Active,
    /// Superseded; still verifies.
    VerifyOnly,
    /// Verifies nothing; its links are revoked.
    Retired,
}

/// A signing key with its secret. The secret never leaves the process except
/// to the storage backend and, for an HMAC key only, to edges over the sync
/// stream; an Ed25519 key's edges get its public key ([`SigningKey::verify_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id.
    pub id: KeyId,
    /// State.
    pub state: KeyState,
    /// How it signs. Keys stored before keys had an algorithm are HMAC-SHA256.
    #[serde(default, with = "algorithm_name")]
    pub algorithm: Algorithm,
    /// 32 random bytes: the HMAC secret, or the Ed25519 private key (RFC 8032
    /// seed); `Debug` redacts it.
    #[serde(with = "secret_hex")]
    pub secret: SecretKey,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Activation time, Unix seconds.
    pub activated_at: Option<u64>,
    /// Retirement time, Unix seconds.
    pub retired_at: Option<u64>,
}

impl SigningKey {
    /// What a verifier gets: the HMAC secret, or the Ed25519 public key with the
    /// key's session secret (`docs/sessions.md`).
    pub fn verify_key(&self) -> VerifyKey {
        match self.algorithm {
            Algorithm::HmacSha256 => VerifyKey::Hmac(self.secret.clone()),
            Algorithm::Ed25519 => {
                let seed = self.ed25519();
                VerifyKey::Ed25519Session(seed.public(), stile_token::derive_session_secret(seed.expose()))
            }
        }
    }

    /// Adds the key, able to sign, to a ring.
    pub fn add_to(&self, ring: &mut KeyRing) {
        match self.algorithm {
            Algorithm::HmacSha256 => ring.insert(self.id, &self.secret),
            Algorithm::Ed25519 => ring.insert_ed25519_secret(self.id, &self.ed25519()),
        }
    }

    fn ed25519(&self) -> Ed25519Secret {
        Ed25519Secret::from_bytes(*self.secret.expose())
    }
}

/// Most foreign keys one format holds, as an edge holds them
/// (`stile_foreign::MAX_KEYS`); the store refuses a ninth.
pub const MAX_FOREIGN_KEYS: usize = stile_foreign::MAX_KEYS;

/// Another vendor's signing key (`KeyService.AddForeign`), with its material
/// as the vendor writes it. Like a signing key's secret, the material leaves
/// the process only to the storage backend and to edges over the sync
/// stream; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The link format's name (`stile_foreign::Format::as_str`).
    pub format: String,
    /// The key's name as the vendor names it (1..=64 visible ASCII bytes).
    pub name: String,
    /// The key as the vendor writes it; checked with
    /// `stile_foreign::Key::parse_as` before it is stored.
    pub key: String,
    /// When it was added, Unix seconds.
    pub created_at: u64,
    /// The API key that added it.
    pub created_by: String,
}

impl ForeignKey {
    /// Its identity in the stores: `<format> <name>` (a name holds no space).
    pub fn id(format: &str, name: &str) -> String {
        format!("{format} {name}")
    }
}

impl fmt::Debug for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ForeignKey({}, {:?}, <redacted>, {}, {:?})",
            self.format, self.name, self.created_at, self.created_by
        )
    }
}

/// What a revocation matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One token id (its `u64` form).
    Token {
        /// The token id.
        token_id: u64,
    },
    /// A subject's tokens issued before a time.
    Subject {
        /// The subject.
        subject: String,
        /// Unix seconds; tokens issued strictly before are revoked.
        issued_before: u64,
    },
    /// Tokens whose scope lies under a prefix, issued before a time.
    PathPrefix {
        /// Canonical prefix ending in `/`.
        prefix: String,
        /// Unix seconds; tokens issued strictly before are revoked.
        issued_before: u64,
        /// Also purge edge caches under the prefix.
        purge: bool,
    },
    /// Every token of a key.
    Key {
        /// The key id.
        key_id: KeyId,
    },
}

impl fmt::Display for Target {
    /// The audit-log form: `token:…`, `subject:…`, `path:…`, `key:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Token { token_id } => write!(f, "token:{token_id:016x}"),
            Target::Subject { subject, .. } => write!(f, "subject:{subject}"),
            Target::PathPrefix { prefix, .. } => write!(f, "path:{prefix}"),
            Target::Key { key_id } => write!(f, "key:{key_id}"),
        }
    }
}

/// A revocation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Log version that recorded it; set by the store on append.
    pub version: u64,
    /// What it matches.
    pub target: Target,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When recorded, Unix seconds.
    pub created_at: u64,
    /// When it can be dropped, Unix seconds.
    pub expires_at: u64,
}

/// What a purge removes from the edges' caches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurgeTarget {
    /// Every object under a canonical prefix ending in `/`.
    Prefix(String),
    /// The object at one canonical path (not ending in `/`).
    Path(String),
}

impl fmt::Display for PurgeTarget {
    /// The audit-log form: `prefix:…`, `path:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PurgeTarget::Prefix(p) => write!(f, "prefix:{p}"),
            PurgeTarget::Path(p) => write!(f, "path:{p}"),
        }
    }
}

/// A cache purge as stored: it revokes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Log version that recorded it; set by the store on append.
    pub version: u64,
    /// What it removes (an asset's purge: the asset's path prefix).
    pub target: PurgeTarget,
    /// The asset named by the operator, if one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub asset_id: String,
    /// Why (may be empty).
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When recorded, Unix seconds.
    pub created_at: u64,
    /// Until when snapshots carry it (`sync.purge_retention_secs` after
    /// `created_at`), Unix seconds.
    pub expires_at: u64,
}

/// What a change log entry records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A revocation (also key retirements, and path-prefix revocations that purge).
    Revocation(Revocation),
    /// A signing key changed state (no secret here).
    Key {
        /// Key id.
        key_id: KeyId,
        /// New state.
        state: KeyState,
        /// The key's algorithm (changes recorded before keys had one: HMAC-SHA256).
        #[serde(default, with = "algorithm_name")]
        algorithm: Algorithm,
    },
    /// A cache purge.
    Purge(Purge),
    /// A foreign key added or removed (no material here).
    ForeignKey {
        /// The link format's name (`stile_foreign::Format::as_str`).
        format: String,
        /// The key's name as the vendor names it.
        name: String,
        /// Removed; `false`: added.
        #[serde(default)]
        removed: bool,
    },
}

/// One change log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Monotonic version, from 1, without gaps.
    pub version: u64,
    /// When, Unix seconds.
    pub at: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub kind: ChangeKind,
}

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// One link.
    Mint,
    /// A batch of links.
    MintBatch,
    /// A revocation.
    Revoke,
    /// A key rotation.
    KeyRotate,
    /// A key retirement.
    KeyRetire,
    /// Asset created or updated.
    AssetPut,
    /// Asset state change.
    AssetState,
    /// API key created.
    ApiKeyCreate,
    /// API key deleted.
    ApiKeyDelete,
    /// A call that writes refused for its credentials (rate-limited per source).
    AuthDenied,
    /// A sync stream refused or ended: an edge id the key may not use, or a
    /// protocol violation.
    SyncRefused,
    /// A sync stream took over an edge id another stream held.
    SyncReplaced,
    /// A cache purge.
    Purge,
    /// A sync stream admitted with a verified TLS client certificate.
    SyncClientCert,
    /// A batch of revocations in one commit (`count` of them).
    RevokeBatch,
    /// A foreign key added.
    ForeignKeyAdd,
    /// A foreign key removed.
    ForeignKeyRemove,
}

/// One audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Sequence number; set by the store.
    pub seq: u64,
    /// When, Unix seconds.
    pub at: u64,
    /// Who (API key name, or `system`).
    pub actor: String,
    /// What.
    pub action: AuditAction,
    /// On what, e.g. `asset:abc`.
    pub target: String,
    /// Share channel of minted links, if one.
    pub channel: String,
    /// Number of links, or 1.
    pub count: u32,
    /// Free-form detail (reason, transition).
    pub detail: String,
}

impl AuditEvent {
    /// An event with count 1 and no channel; the store assigns `seq`.
    pub fn new(at: u64, actor: &str, action: AuditAction, target: String, detail: String) -> AuditEvent {
        AuditEvent { seq: 0, at, actor: actor.to_owned(), action, target, channel: String::new(), count: 1, detail }
    }
}

/// A stored API key: its hash, never the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// SHA-256 of the key string.
    #[serde(with = "hex_32")]
    pub sha256: [u8; 32],
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Creator's name.
    pub created_by: String,
    /// Role edge: the edge ids (or patterns ending in `*`) its sync stream may
    /// announce. Keys stored before this field existed have none (and may
    /// announce no id until recreated).
    #[serde(default)]
    pub edge_ids: Vec<String>,
}

mod secret_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    use stile_token::SecretKey;

    pub(super) fn serialize<S: Serializer>(key: &SecretKey, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(key.expose()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretKey, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text).map_err(serde::de::Error::custom)?;
        SecretKey::from_slice(&bytes).ok_or_else(|| serde::de::Error::custom("signing key must be 32 bytes"))
    }
}

/// A key algorithm by its stable name (`hmac-sha256`, `ed25519`).
mod algorithm_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use stile_token::Algorithm;

    pub(super) fn serialize<S: Serializer>(a: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
        let text = String::deserialize(d)?;
        Algorithm::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown key algorithm {text:?}")))
    }
}

mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(String::deserialize(d)?, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Length check kept beside the serde helpers: secrets are exactly this long.
const _: () = assert!(KEY_LEN == 32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_transitions() {
        use AssetState::*;
        let all = [Draft, Ready, Published, Archived];
        let allowed: Vec<_> =
            all.iter().flat_map(|&a| all.iter().map(move |&b| (a, b))).filter(|(a, b)| a.can_move_to(*b)).collect();
        assert_eq!(
            allowed,
            vec![
                (Draft, Ready),
                (Draft, Archived),
                (Ready, Draft),
                (Ready, Published),
                (Ready, Archived),
                (Published, Ready),
                (Published, Archived)
            ]
        );
    }

    #[test]
    fn signing_key_round_trips_and_debug_redacts() {
        let key = SigningKey {
            id: 3,
            state: KeyState::Active,
            algorithm: Algorithm::Ed25519,
            secret: SecretKey::from_bytes([0xab; KEY_LEN]),
            created_at: 1,
            activated_at: Some(2),
            retired_at: None,
        };
        let json = serde_json::to_string(&key).unwrap();
        assert!(json.contains(r#""algorithm":"ed25519""#), "{json}");
        assert_eq!(serde_json::from_str::<SigningKey>(&json).unwrap(), key);
        assert!(!format!("{key:?}").contains("ab, ab") && !format!("{key:?}").contains("abab"));
        // A verifier gets the public key and the session secret, never the private key's bytes.
        match key.verify_key() {
            VerifyKey::Ed25519Session(public, session) => {
                assert_ne!(public.as_bytes(), &[0xab; 32]);
                assert_ne!(session.expose(), &[0xab; 32]);
                assert_eq!(session, stile_token::derive_session_secret(&[0xab; 32]));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A key stored before keys had an algorithm reads as HMAC-SHA256, and so
    /// does a key change of the log.
    #[test]
    fn records_without_an_algorithm_are_hmac() {
        let old = format!(
            r#"{{"id":1,"state":"active","secret":"{}","created_at":1,"activated_at":2,"retired_at":null}}"#,
            "cd".repeat(32)
        );
        let key: SigningKey = serde_json::from_str(&old).unwrap();
        assert_eq!(key.algorithm, Algorithm::HmacSha256);
        assert_eq!(key.verify_key(), VerifyKey::Hmac(SecretKey::from_bytes([0xcd; 32])));
        let change: ChangeKind = serde_json::from_str(r#"{"key":{"key_id":1,"state":"active"}}"#).unwrap();
        assert_eq!(change, ChangeKind::Key { key_id: 1, state: KeyState::Active, algorithm: Algorithm::HmacSha256 });
    }
}
