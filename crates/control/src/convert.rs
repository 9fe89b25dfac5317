//! Explicit conversions between the domain types and `stile.v1` messages.

use stile_proto::v1 as pb;
use stile_token::{Algorithm, TokenId, VerifyKey};

use crate::error::ApiError;
use crate::mint::{CountryLists, MintParams, MintedLink};
use crate::model::{
    ApiKey, Asset, AssetState, AuditAction, AuditEvent, Change, ChangeKind, ForeignKey, KeyState, Purge, PurgeTarget,
    Revocation, Role, SigningKey, Target,
};

impl From<AssetState> for pb::AssetState {
    fn from(s: AssetState) -> pb::AssetState {
        match s {
            AssetState::Draft => pb::AssetState::Draft,
            AssetState::Ready => pb::AssetState::Ready,
            AssetState::Published => pb::AssetState::Published,
            AssetState::Archived => pb::AssetState::Archived,
        }
    }
}

/// An asset state from the wire; UNSPECIFIED and unknown values are `None`.
pub(crate) fn asset_state(value: i32) -> Option<AssetState> {
    match pb::AssetState::try_from(value).ok()? {
        pb::AssetState::Unspecified => None,
        pb::AssetState::Draft => Some(AssetState::Draft),
        pb::AssetState::Ready => Some(AssetState::Ready),
        pb::AssetState::Published => Some(AssetState::Published),
        pb::AssetState::Archived => Some(AssetState::Archived),
    }
}

impl From<Asset> for pb::Asset {
    fn from(a: Asset) -> pb::Asset {
        pb::Asset {
            id: a.id,
            path: a.path,
            entry: a.entry,
            state: pb::AssetState::from(a.state).into(),
            revision: a.revision,
            created_at: a.created_at,
            updated_at: a.updated_at,
            updated_by: a.updated_by,
        }
    }
}

impl From<KeyState> for pb::KeyState {
    fn from(s: KeyState) -> pb::KeyState {
        match s {
            KeyState::Pending => pb::KeyState::Pending,
            KeyState::Active => pb::KeyState::Active,
            KeyState::VerifyOnly => pb::KeyState::VerifyOnly,
            KeyState::Retired => pb::KeyState::Retired,
        }
    }
}

/// The wire form of a key algorithm.
pub(crate) fn key_algorithm(a: Algorithm) -> pb::KeyAlgorithm {
    match a {
        Algorithm::HmacSha256 => pb::KeyAlgorithm::HmacSha256,
        Algorithm::Ed25519 => pb::KeyAlgorithm::Ed25519,
    }
}

/// A requested key algorithm: unset is HMAC-SHA256; an unknown value is INVALID_ARGUMENT.
pub(crate) fn algorithm_from_wire(value: i32) -> Result<Algorithm, ApiError> {
    match pb::KeyAlgorithm::try_from(value) {
        Ok(pb::KeyAlgorithm::Unspecified | pb::KeyAlgorithm::HmacSha256) => Ok(Algorithm::HmacSha256),
        Ok(pb::KeyAlgorithm::Ed25519) => Ok(Algorithm::Ed25519),
        Err(_) => Err(ApiError::InvalidArgument(format!("algorithm: unknown key algorithm {value}"))),
    }
}

/// Public facts about a key: never its secret.
pub(crate) fn key_info(k: &SigningKey) -> pb::KeyInfo {
    pb::KeyInfo {
        key_id: k.id,
        state: pb::KeyState::from(k.state).into(),
        created_at: k.created_at,
        activated_at: k.activated_at.unwrap_or(0),
        retired_at: k.retired_at.unwrap_or(0),
        algorithm: key_algorithm(k.algorithm).into(),
    }
}

/// A foreign key with its material, for the sync stream only.
pub(crate) fn edge_foreign_key(k: &ForeignKey) -> pb::ForeignKey {
    pb::ForeignKey { format: k.format.clone(), name: k.name.clone(), key: k.key.clone() }
}

/// A foreign key's public facts (never its material).
pub(crate) fn foreign_key_info(k: &ForeignKey) -> pb::ForeignKeyInfo {
    pb::ForeignKeyInfo {
        format: k.format.clone(),
        name: k.name.clone(),
        created_at: k.created_at,
        created_by: k.created_by.clone(),
    }
}

/// A verifying key for the edges: an HMAC key with its secret, an Ed25519
/// key with its public key and session secret (never its private key). Only the Sync stream sends this.
pub(crate) fn edge_key(k: &SigningKey) -> pb::EdgeKey {
    let state = pb::KeyState::from(k.state).into();
    let algorithm = key_algorithm(k.algorithm).into();
    match k.verify_key() {
        VerifyKey::Hmac(secret) => pb::EdgeKey {
            key_id: k.id,
            state,
            algorithm,
            secret: secret.expose().to_vec(),
            public_key: Vec::new(),
            session_secret: Vec::new(),
        },
        VerifyKey::Ed25519(public) => pb::EdgeKey {
            key_id: k.id,
            state,
            algorithm,
            secret: Vec::new(),
            public_key: public.as_bytes().to_vec(),
            session_secret: Vec::new(),
        },
        VerifyKey::Ed25519Session(public, session) => pb::EdgeKey {
            key_id: k.id,
            state,
            algorithm,
            secret: Vec::new(),
            public_key: public.as_bytes().to_vec(),
            session_secret: session.expose().to_vec(),
        },
    }
}

impl From<Target> for pb::RevocationTarget {
    fn from(t: Target) -> pb::RevocationTarget {
        use pb::revocation_target::Target as T;
        let target = match t {
            Target::Token { token_id } => T::TokenId(TokenId::from_u64(token_id).to_string()),
            Target::Subject { subject, issued_before } => T::Subject(pb::SubjectTarget { subject, issued_before }),
            Target::PathPrefix { prefix, issued_before, purge } => {
                T::PathPrefix(pb::PathPrefixTarget { prefix, issued_before, purge })
            }
            Target::Key { key_id } => T::KeyId(key_id),
        };
        pb::RevocationTarget { target: Some(target) }
    }
}

impl From<Revocation> for pb::Revocation {
    fn from(r: Revocation) -> pb::Revocation {
        pb::Revocation {
            version: r.version,
            target: Some(r.target.into()),
            reason: r.reason,
            actor: r.actor,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

impl From<PurgeTarget> for pb::PurgeTarget {
    fn from(t: PurgeTarget) -> pb::PurgeTarget {
        use pb::purge_target::Target as T;
        let target = match t {
            PurgeTarget::Prefix(p) => T::Prefix(p),
            PurgeTarget::Path(p) => T::Path(p),
        };
        pb::PurgeTarget { target: Some(target) }
    }
}

impl From<Purge> for pb::Purge {
    fn from(p: Purge) -> pb::Purge {
        pb::Purge {
            version: p.version,
            target: Some(p.target.into()),
            reason: p.reason,
            actor: p.actor,
            created_at: p.created_at,
            expires_at: p.expires_at,
            asset_id: p.asset_id,
        }
    }
}

impl From<Change> for pb::Change {
    fn from(c: Change) -> pb::Change {
        let kind = match c.kind {
            ChangeKind::Revocation(r) => pb::change::Kind::Revocation(r.into()),
            ChangeKind::Key { key_id, state, algorithm } => pb::change::Kind::Key(pb::KeyChange {
                key_id,
                state: pb::KeyState::from(state).into(),
                algorithm: key_algorithm(algorithm).into(),
            }),
            ChangeKind::Purge(p) => pb::change::Kind::Purge(p.into()),
            ChangeKind::ForeignKey { format, name, removed } => {
                pb::change::Kind::ForeignKey(pb::ForeignKeyChange { format, name, removed })
            }
        };
        pb::Change { version: c.version, at: c.at, actor: c.actor, kind: Some(kind) }
    }
}

impl From<AuditAction> for pb::AuditAction {
    fn from(a: AuditAction) -> pb::AuditAction {
        match a {
            AuditAction::Mint => pb::AuditAction::Mint,
            AuditAction::MintBatch => pb::AuditAction::MintBatch,
            AuditAction::Revoke => pb::AuditAction::Revoke,
            AuditAction::KeyRotate => pb::AuditAction::KeyRotate,
            AuditAction::KeyRetire => pb::AuditAction::KeyRetire,
            AuditAction::AssetPut => pb::AuditAction::AssetPut,
            AuditAction::AssetState => pb::AuditAction::AssetState,
            AuditAction::ApiKeyCreate => pb::AuditAction::ApiKeyCreate,
            AuditAction::ApiKeyDelete => pb::AuditAction::ApiKeyDelete,
            AuditAction::AuthDenied => pb::AuditAction::AuthDenied,
            AuditAction::SyncRefused => pb::AuditAction::SyncRefused,
            AuditAction::SyncReplaced => pb::AuditAction::SyncReplaced,
            AuditAction::SyncClientCert => pb::AuditAction::SyncClientCert,
            AuditAction::Purge => pb::AuditAction::Purge,
            AuditAction::RevokeBatch => pb::AuditAction::RevokeBatch,
            AuditAction::ForeignKeyAdd => pb::AuditAction::ForeignKeyAdd,
            AuditAction::ForeignKeyRemove => pb::AuditAction::ForeignKeyRemove,
        }
    }
}

/// An audit action filter from the wire; UNSPECIFIED is `None` (all).
pub(crate) fn audit_action(value: i32) -> Result<Option<AuditAction>, ApiError> {
    let action = pb::AuditAction::try_from(value)
        .map_err(|_| ApiError::InvalidArgument(format!("unknown audit action {value}")))?;
    Ok(match action {
        pb::AuditAction::Unspecified => None,
        pb::AuditAction::Mint => Some(AuditAction::Mint),
        pb::AuditAction::MintBatch => Some(AuditAction::MintBatch),
        pb::AuditAction::Revoke => Some(AuditAction::Revoke),
        pb::AuditAction::KeyRotate => Some(AuditAction::KeyRotate),
        pb::AuditAction::KeyRetire => Some(AuditAction::KeyRetire),
        pb::AuditAction::AssetPut => Some(AuditAction::AssetPut),
        pb::AuditAction::AssetState => Some(AuditAction::AssetState),
        pb::AuditAction::ApiKeyCreate => Some(AuditAction::ApiKeyCreate),
        pb::AuditAction::ApiKeyDelete => Some(AuditAction::ApiKeyDelete),
        pb::AuditAction::AuthDenied => Some(AuditAction::AuthDenied),
        pb::AuditAction::SyncRefused => Some(AuditAction::SyncRefused),
        pb::AuditAction::SyncReplaced => Some(AuditAction::SyncReplaced),
        pb::AuditAction::SyncClientCert => Some(AuditAction::SyncClientCert),
        pb::AuditAction::Purge => Some(AuditAction::Purge),
        pb::AuditAction::RevokeBatch => Some(AuditAction::RevokeBatch),
        pb::AuditAction::ForeignKeyAdd => Some(AuditAction::ForeignKeyAdd),
        pb::AuditAction::ForeignKeyRemove => Some(AuditAction::ForeignKeyRemove),
    })
}

impl From<AuditEvent> for pb::AuditEvent {
    fn from(e: AuditEvent) -> pb::AuditEvent {
        pb::AuditEvent {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            action: pb::AuditAction::from(e.action).into(),
            target: e.target,
            channel: e.channel,
            count: e.count,
            detail: e.detail,
        }
    }
}

impl From<Role> for pb::Role {
    fn from(r: Role) -> pb::Role {
        match r {
            Role::Minter => pb::Role::Minter,
            Role::Operator => pb::Role::Operator,
            Role::Edge => pb::Role::Edge,
            Role::Admin => pb::Role::Admin,
        }
    }
}

/// A role from the wire.
pub(crate) fn role(value: i32) -> Result<Role, ApiError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Minter) => Ok(Role::Minter),
        Ok(pb::Role::Operator) => Ok(Role::Operator),
        Ok(pb::Role::Edge) => Ok(Role::Edge),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        _ => Err(ApiError::InvalidArgument("role must be MINTER, OPERATOR, EDGE or ADMIN".into())),
    }
}

/// Public facts about a stored API key.
pub(crate) fn api_key_info(k: &ApiKey) -> pb::ApiKeyInfo {
    pb::ApiKeyInfo {
        name: k.name.clone(),
        role: pb::Role::from(k.role).into(),
        created_at: k.created_at,
        created_by: k.created_by.clone(),
        edge_ids: k.edge_ids.clone(),
    }
}

/// A mint request in domain terms: empty strings, zero numbers and empty
/// country lists are "not given". Borrows from the request.
pub(crate) fn mint_params(req: &pb::MintRequest) -> MintParams<'_> {
    fn non_empty(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let number = |n: u64| (n != 0).then_some(n);
    MintParams {
        policy: non_empty(&req.policy),
        ttl_secs: number(req.ttl_secs),
        not_before: number(req.not_before),
        scope: non_empty(&req.scope),
        entry: non_empty(&req.entry),
        subject: non_empty(&req.subject),
        client_ip: non_empty(&req.client_ip),
        countries: req
            .countries
            .as_ref()
            .filter(|c| !(c.allow.is_empty() && c.deny.is_empty()))
            .map(|c| CountryLists { allow: &c.allow, deny: &c.deny }),
        base_url: non_empty(&req.base_url),
        channel: non_empty(&req.channel),
    }
}

impl From<MintedLink> for pb::Link {
    fn from(link: MintedLink) -> pb::Link {
        pb::Link {
            query_url: link.query_url,
            path_url: link.path_url,
            cookie: Some(pb::CookieLink {
                url: link.cookie.url,
                name: link.cookie.name,
                value: link.token.clone(),
                path: link.cookie.path,
                max_age: link.cookie.max_age,
            }),
            token: link.token,
            token_id: link.token_id.to_string(),
            issued_at: link.issued_at,
            expires_at: link.expires_at,
            key_id: link.key_id,
            scope: link.scope,
            policy: link.policy,
        }
    }
}
