//! `KeyService`: Rotate, List, Retire; and the key operations the rest of the
//! server shares (start-up key, key revocation through `Revoke`).
//!
//! Rollout seam (issue 4, edge sync): a rotated key is logged PENDING, then
//! ACTIVE in the same commit. Once edges ACK versions, rotation commits only
//! the PENDING change and a rollout task appends ACTIVE after every connected
//! edge has applied the PENDING version.

use std::sync::Arc;

use rand::TryRngCore;
use rand::rngs::OsRng;
use stile_proto::v1 as pb;
use stile_proto::v1::key_service_server::KeyService;
use stile_token::{KEY_LEN, KeyId, SecretKey};
use tonic::{Request, Response, Status};

use super::{Shared, check_reason};
use crate::auth::Rpc;
use crate::convert::key_info;
use crate::error::ApiError;
use crate::model::{AuditAction, AuditEvent, ChangeKind, KeyState, Revocation, SigningKey, Target};
use crate::store::{Batch, Write};

/// The signing key service.
#[derive(Clone, Debug)]
pub(crate) struct Keys(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl KeyService for Keys {
    async fn rotate(&self, request: Request<pb::RotateKeyRequest>) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::RotateKey).await?;
        let reason = request.into_inner().reason;
        check_reason(&reason, false)?;
        let (key, version) = rotate(&self.0, &caller.name, &reason).await?;
        tracing::info!(caller = %caller.name, key.id = key.id, version, "keys.rotate");
        Ok(Response::new(pb::RotateKeyResponse { key: Some(key_info(&key)), version }))
    }

    async fn list(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListKeys).await?;
        let include_retired = request.into_inner().include_retired;
        let keys = self.0.store.signing_keys().await.map_err(ApiError::from)?;
        let keys =
            keys.iter().filter(|k| include_retired || k.state != KeyState::Retired).map(key_info).collect::<Vec<_>>();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn retire(&self, request: Request<pb::RetireKeyRequest>) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::RetireKey).await?;
        let req = request.into_inner();
        check_reason(&req.reason, true)?;
        let (key, revocation) = retire(&self.0, &caller.name, req.key_id, &req.reason).await?;
        let version = revocation.version;
        Ok(Response::new(pb::RetireKeyResponse {
            key: Some(key_info(&key)),
            revocation: Some(revocation.into()),
            version,
        }))
    }
}

/// Creates a key from the OS CSPRNG and makes it the minting key; the
/// previous minting key keeps verifying. Returns the key and the log version.
pub(crate) async fn rotate(s: &Shared, actor: &str, reason: &str) -> Result<(SigningKey, u64), ApiError> {
    let _guard = s.key_lock.lock().await;
    let keys = s.store.signing_keys().await?;
    let id: KeyId = keys
        .iter()
        .map(|k| k.id)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or_else(|| ApiError::FailedPrecondition("key ids are exhausted".into()))?;
    let mut secret = [0u8; KEY_LEN];
    OsRng.try_fill_bytes(&mut secret).map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))?;
    let now = s.now();
    let key = SigningKey {
        id,
        state: KeyState::Active,
        secret: SecretKey::from_bytes(secret),
        created_at: now,
        activated_at: Some(now),
        retired_at: None,
    };
    let change =
        |key_id, state| Write::Append { at: now, actor: actor.to_owned(), kind: ChangeKind::Key { key_id, state } };
    let mut writes = vec![
        Write::PutKey { key: key.clone(), create: true },
        change(id, KeyState::Pending),
        // Issue 4: this ACTIVE step waits until every connected edge ACKed PENDING.
        change(id, KeyState::Active),
    ];
    for old in keys.into_iter().filter(|k| k.state == KeyState::Active) {
        writes.push(change(old.id, KeyState::VerifyOnly));
        writes.push(Write::PutKey { key: SigningKey { state: KeyState::VerifyOnly, ..old }, create: false });
    }
    let audit = vec![AuditEvent::new(now, actor, AuditAction::KeyRotate, format!("key:{id}"), reason.to_owned())];
    let committed = s.store.commit(Batch { writes, audit }).await?;
    s.reload_keys().await?;
    let version = committed.changes.last().map_or(0, |c| c.version);
    Ok((key, version))
}

/// Retires a key and revokes its tokens, in one commit.
pub(crate) async fn retire(
    s: &Shared,
    actor: &str,
    key_id: KeyId,
    reason: &str,
) -> Result<(SigningKey, Revocation), ApiError> {
    let _guard = s.key_lock.lock().await;
    let keys = s.store.signing_keys().await?;
    let key = keys
        .into_iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| ApiError::NotFound(format!("signing key {key_id} does not exist (KeyService.List)")))?;
    match key.state {
        KeyState::Active => {
            return Err(ApiError::FailedPrecondition(format!(
                "key {key_id} is the active minting key; rotate first (KeyService.Rotate), then retire it"
            )));
        }
        KeyState::Retired => {
            return Err(ApiError::FailedPrecondition(format!("key {key_id} is already retired")));
        }
        KeyState::Pending | KeyState::VerifyOnly => {}
    }
    let now = s.now();
    let key = SigningKey { state: KeyState::Retired, retired_at: Some(now), ..key };
    let revocation = Revocation {
        version: 0,
        target: Target::Key { key_id },
        reason: reason.to_owned(),
        actor: actor.to_owned(),
        created_at: now,
        expires_at: now + s.config.max_ttl_secs() + s.config.revocations.expiry_margin_secs,
    };
    let writes = vec![
        Write::PutKey { key: key.clone(), create: false },
        Write::Append { at: now, actor: actor.to_owned(), kind: ChangeKind::Key { key_id, state: KeyState::Retired } },
        Write::Append { at: now, actor: actor.to_owned(), kind: ChangeKind::Revocation(revocation) },
    ];
    let audit = vec![AuditEvent::new(now, actor, AuditAction::KeyRetire, format!("key:{key_id}"), reason.to_owned())];
    let committed = s.store.commit(Batch { writes, audit }).await?;
    s.reload_keys().await?;
    let revocation = committed
        .changes
        .into_iter()
        .find_map(|c| match c.kind {
            ChangeKind::Revocation(r) => Some(r),
            ChangeKind::Key { .. } => None,
        })
        .ok_or_else(|| ApiError::Internal("store did not return the key revocation".into()))?;
    tracing::info!(caller = %actor, key.id = key_id, version = revocation.version, "keys.retire");
    Ok((key, revocation))
}
