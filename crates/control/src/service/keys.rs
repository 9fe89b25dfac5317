//! `KeyService`: Rotate, List, Retire, and the foreign keys ([`foreign`]:
//! AddForeign, RemoveForeign, ListForeign); and the key operations the rest
//! of the server shares (start-up key, key revocation through `Revoke`).
//!
//! Key rollout: Rotate commits the new key as PENDING, which the sync streams
//! push to every edge (an HMAC key with its secret, an Ed25519 key as its
//! public key only; edges verify with PENDING keys). Once every connected edge
//! has ACKed that version — or after `sync.key_activation_timeout_secs`, logged
//! with the laggards' ids — a second commit makes it ACTIVE and the previous
//! active key of the same algorithm VERIFY_ONLY. Each algorithm has at most one
//! ACTIVE key, and a policy's algorithm picks which one mints; minting only
//! ever uses ACTIVE keys, so a fresh link never names a key an edge has not
//! been sent. The activation runs in its own task: a caller that
//! hangs up does not leave the key PENDING, and a PENDING key found at
//! start-up (crash mid-rollout) is rolled out again.

mod foreign;

use std::sync::Arc;
use std::time::Duration;

use stile_proto::v1 as pb;
use stile_proto::v1::key_service_server::KeyService;
use stile_token::{Algorithm, KEY_LEN, KeyId, SecretKey};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::check_reason;
use crate::auth::{Authenticator, Rpc};
use crate::clock::Clock;
use crate::config::Config;
use crate::confirm::{Expectation, confirm, lagging};
use crate::convert::{algorithm_from_wire, foreign_key_info, key_info};
use crate::error::ApiError;
use crate::fleet::{EdgeView, ReplicaFleet};
use crate::metrics::Metrics;
use crate::model::{AuditAction, AuditEvent, ChangeKind, KeyState, Revocation, SigningKey, Target};
use crate::random;
use crate::signing::SigningKeys;
use crate::store::{Batch, Store, Write};

/// The signing key service.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) rollout: Arc<KeyRollout>,
}

#[tonic::async_trait]
impl KeyService for Keys {
    async fn rotate(&self, request: Request<pb::RotateKeyRequest>) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::RotateKey).await?;
        let req = request.into_inner();
        let reason = req.reason;
        check_reason(&reason, false)?;
        let expect = req.expect.map(|e| Expectation::from_request(Some(e))).transpose()?;
        let algorithm = algorithm_from_wire(req.algorithm)?;
        let r = self.rollout.rotate(&caller.name, &reason, algorithm, expect).await?;
        tracing::info!(
            caller = %caller.name,
            key.id = r.key.id,
            key.algorithm = %algorithm,
            version = r.version,
            "keys.rotate"
        );
        Ok(Response::new(pb::RotateKeyResponse {
            key: Some(key_info(&r.key)),
            version: r.version,
            pending_version: r.pending_version,
            lagging: r.lagging,
            confirmation: Some(r.confirmation),
        }))
    }

    async fn list(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.auth.check(&request, Rpc::ListKeys).await?;
        let include_retired = request.into_inner().include_retired;
        let keys = self.store.signing_keys().await.map_err(ApiError::from)?;
        let keys =
            keys.iter().filter(|k| include_retired || k.state != KeyState::Retired).map(key_info).collect::<Vec<_>>();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn retire(&self, request: Request<pb::RetireKeyRequest>) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::RetireKey).await?;
        let req = request.into_inner();
        check_reason(&req.reason, true)?;
        let (key, revocation) = self.rollout.retire(&caller.name, req.key_id, &req.reason).await?;
        let version = revocation.version;
        Ok(Response::new(pb::RetireKeyResponse {
            key: Some(key_info(&key)),
            revocation: Some(revocation.into()),
            version,
        }))
    }

    async fn add_foreign(
        &self,
        request: Request<pb::AddForeignKeyRequest>,
    ) -> Result<Response<pb::AddForeignKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::AddForeignKey).await?;
        let req = request.into_inner();
        check_reason(&req.reason, false)?;
        let (key, version) =
            self.rollout.add_foreign(&caller.name, &req.format, &req.name, &req.key, &req.reason).await?;
        Ok(Response::new(pb::AddForeignKeyResponse { key: Some(foreign_key_info(&key)), version }))
    }

    async fn remove_foreign(
        &self,
        request: Request<pb::RemoveForeignKeyRequest>,
    ) -> Result<Response<pb::RemoveForeignKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::RemoveForeignKey).await?;
        let req = request.into_inner();
        check_reason(&req.reason, false)?;
        let version = self.rollout.remove_foreign(&caller.name, &req.format, &req.name, &req.reason).await?;
        Ok(Response::new(pb::RemoveForeignKeyResponse { version }))
    }

    async fn list_foreign(
        &self,
        request: Request<pb::ListForeignKeysRequest>,
    ) -> Result<Response<pb::ListForeignKeysResponse>, Status> {
        self.auth.check(&request, Rpc::ListForeignKeys).await?;
        let keys = self.store.foreign_keys().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListForeignKeysResponse { keys: keys.iter().map(foreign_key_info).collect() }))
    }
}

/// The outcome of a rotation.
#[derive(Debug)]
pub(crate) struct Rotated {
    /// The new key, as stored (ACTIVE unless it was retired during its rollout).
    pub(crate) key: SigningKey,
    /// The version that made it ACTIVE.
    pub(crate) version: u64,
    /// The version that pushed it as PENDING.
    pub(crate) pending_version: u64,
    /// Expected edges that had not ACKed `pending_version` at activation.
    pub(crate) lagging: Vec<String>,
    /// Who held the key (`pending_version`) at activation, against the expectation.
    pub(crate) confirmation: pb::Confirmation,
}

/// Every change to the signing keys: rotation with its rollout to the edges,
/// activation, retirement (with the revocation of the key's links), and the
/// resumption of a rollout a previous run left PENDING.
#[derive(Debug)]
pub(crate) struct KeyRollout {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: Arc<SigningKeys>,
    replicas: Arc<ReplicaFleet>,
    metrics: Arc<Metrics>,
    /// A rotated key becomes ACTIVE at the latest this long after PENDING.
    activation_timeout: Duration,
    /// At start-up, how long edges get to reconnect before a resumed rollout counts them.
    reconnect_grace: Duration,
    /// How long a key revocation is kept, seconds.
    revocation_lifetime_secs: u64,
    /// The algorithms configured policies mint with: an ACTIVE key of one of
    /// them cannot be retired (it would stop minting).
    minting: Vec<Algorithm>,
    /// Serialises key changes made through this process. Across replicas the
    /// store's create-only key writes catch races (ABORTED).
    key_lock: Mutex<()>,
    /// Serialises whole key rotations (PENDING, rollout, ACTIVE).
    rotate_lock: Mutex<()>,
}

impl KeyRollout {
    pub(crate) fn new(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: Arc<SigningKeys>,
        replicas: Arc<ReplicaFleet>,
        metrics: Arc<Metrics>,
    ) -> KeyRollout {
        KeyRollout {
            store,
            clock,
            keys,
            replicas,
            metrics,
            activation_timeout: Duration::from_secs(config.sync.key_activation_timeout_secs),
            reconnect_grace: Duration::from_millis(3 * config.sync.heartbeat_interval_ms + 1_000),
            revocation_lifetime_secs: config.revocation_lifetime_secs(),
            minting: config.minting_algorithms(),
            key_lock: Mutex::new(()),
            rotate_lock: Mutex::new(()),
        }
    }

    /// Creates a key of `algorithm` from the OS CSPRNG, pushes it to the edges
    /// as PENDING, and makes it the minting key of its algorithm once the
    /// connected edges have it (see the module documentation). The previous
    /// minting key of that algorithm keeps verifying. With `expect`, the
    /// activation also waits (up to the activation timeout) until the
    /// expectation is met.
    pub(crate) async fn rotate(
        self: &Arc<Self>,
        actor: &str,
        reason: &str,
        algorithm: Algorithm,
        expect: Option<Expectation>,
    ) -> Result<Rotated, ApiError> {
        let _rotation = self.rotate_lock.lock().await;
        let (key, pending_version) = {
            let _guard = self.key_lock.lock().await;
            let keys = self.store.signing_keys().await?;
            let id: KeyId = keys
                .iter()
                .map(|k| k.id)
                .max()
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| ApiError::FailedPrecondition("key ids are exhausted".into()))?;
            let mut secret = [0u8; KEY_LEN];
            random::fill(&mut secret)?;
            let now = self.clock.now_secs();
            let key = SigningKey {
                id,
                state: KeyState::Pending,
                algorithm,
                secret: SecretKey::from_bytes(secret),
                created_at: now,
                activated_at: None,
                retired_at: None,
            };
            let writes = vec![
                Write::PutKey { key: key.clone(), create: true },
                Write::Append {
                    at: now,
                    actor: actor.to_owned(),
                    kind: ChangeKind::Key { key_id: id, state: KeyState::Pending, algorithm },
                },
            ];
            let audit =
                vec![AuditEvent::new(now, actor, AuditAction::KeyRotate, format!("key:{id}"), reason.to_owned())];
            let committed = self.store.commit(Batch { writes, audit }).await?;
            self.keys.reload().await?;
            (key, committed.changes.last().map_or(0, |c| c.version))
        };
        tracing::info!(key.id = key.id, key.algorithm = %algorithm, version = pending_version, "keys.pending");
        // Its own task: the activation happens even if the caller goes away.
        let rollout = Arc::clone(self);
        let actor = actor.to_owned();
        let task = tokio::spawn(async move {
            rollout.activate_after_rollout(key.id, pending_version, &actor, expect.as_ref()).await
        });
        task.await.map_err(|e| ApiError::Internal(format!("key rollout task: {e}")))?
    }

    /// Resumes rollouts a previous run left PENDING. For an algorithm without
    /// an active key its newest pending key is activated at once (nothing can
    /// mint with that algorithm anyway); every other pending key gets a rollout
    /// after the edges had time to reconnect.
    pub(crate) async fn resume(self: &Arc<Self>) -> Result<(), ApiError> {
        let keys = self.store.signing_keys().await?;
        let mut pending: Vec<_> = keys.iter().filter(|k| k.state == KeyState::Pending).map(|k| k.id).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let version = self.store.version().await?;
        pending.sort_unstable();
        for algorithm in Algorithm::ALL {
            let of = |k: &&SigningKey| k.algorithm == algorithm;
            if !keys.iter().filter(of).any(|k| k.state == KeyState::Active)
                && let Some(newest) =
                    keys.iter().filter(of).filter(|k| k.state == KeyState::Pending).map(|k| k.id).max()
            {
                self.activate(newest, "system").await?;
                pending.retain(|id| *id != newest);
            }
        }
        for id in pending {
            let rollout = Arc::clone(self);
            tokio::spawn(async move {
                // Give the edges a chance to reconnect before counting who has the key.
                tokio::time::sleep(rollout.reconnect_grace).await;
                if let Err(e) = rollout.activate_after_rollout(id, version, "system", None).await {
                    tracing::error!(key.id = id, error = %e, "keys.rollout_failed");
                }
            });
        }
        Ok(())
    }

    /// Waits until every connected edge ACKed `pending_version` and, with
    /// `expect`, the expectation is met (or the activation timeout), then
    /// activates the key. The confirmation is against `expect`, or the
    /// default expectation (every edge connected or seen within the window,
    /// at least one) — which departed edges can leave unmet without holding
    /// up the activation.
    async fn activate_after_rollout(
        &self,
        id: KeyId,
        pending_version: u64,
        actor: &str,
        expect: Option<&Expectation>,
    ) -> Result<Rotated, ApiError> {
        let deadline = Instant::now() + self.activation_timeout;
        let window = self.replicas.window_secs();
        let default = Expectation { min_edges: 1, edges: Vec::new() };
        let met = |edges: &[EdgeView]| {
            edges.iter().filter(|e| !e.departed).all(|e| e.applied >= pending_version)
                && expect.is_none_or(|x| {
                    confirm(pending_version, edges, x, window).verdict() == pb::ConfirmationVerdict::Confirmed
                })
        };
        let known = self.replicas.wait_until(deadline, met).await;
        let confirmation = confirm(pending_version, &known, expect.unwrap_or(&default), window);
        let lagging = lagging(&confirmation);
        if confirmation.verdict() == pb::ConfirmationVerdict::Confirmed {
            tracing::info!(key.id = id, edges = confirmation.confirmed, "keys.rollout_complete");
        } else {
            tracing::warn!(
                key.id = id,
                version = pending_version,
                lagging = ?lagging,
                summary = %confirmation.summary,
                timeout_secs = self.activation_timeout.as_secs(),
                "keys.rollout_not_confirmed: activating although these edges have not ACKed the key"
            );
        }
        let (key, version) = self.activate(id, actor).await?;
        Ok(Rotated { key, version, pending_version, lagging, confirmation })
    }

    /// Makes a PENDING key ACTIVE and the current active key of its algorithm
    /// VERIFY_ONLY, in one commit. A key retired meanwhile stays retired.
    async fn activate(&self, id: KeyId, actor: &str) -> Result<(SigningKey, u64), ApiError> {
        let _guard = self.key_lock.lock().await;
        let keys = self.store.signing_keys().await?;
        let key = keys
            .iter()
            .find(|k| k.id == id)
            .cloned()
            .ok_or_else(|| ApiError::Internal(format!("pending key {id} disappeared from the store")))?;
        if key.state != KeyState::Pending {
            let version = self.store.version().await?;
            return Ok((key, version));
        }
        let now = self.clock.now_secs();
        let key = SigningKey { state: KeyState::Active, activated_at: Some(now), ..key };
        let algorithm = key.algorithm;
        let change = |key_id, state| Write::Append {
            at: now,
            actor: actor.to_owned(),
            kind: ChangeKind::Key { key_id, state, algorithm },
        };
        let mut writes = vec![Write::PutKey { key: key.clone(), create: false }, change(id, KeyState::Active)];
        for old in keys.into_iter().filter(|k| k.state == KeyState::Active && k.algorithm == algorithm) {
            writes.push(change(old.id, KeyState::VerifyOnly));
            writes.push(Write::PutKey { key: SigningKey { state: KeyState::VerifyOnly, ..old }, create: false });
        }
        let committed = self.store.commit(Batch { writes, audit: Vec::new() }).await?;
        self.keys.reload().await?;
        let version = committed
            .changes
            .iter()
            .find(|c| matches!(c.kind, ChangeKind::Key { state: KeyState::Active, .. }))
            .map_or(0, |c| c.version);
        tracing::info!(key.id = id, version, "keys.active");
        Ok((key, version))
    }

    /// Retires a key and revokes its tokens, in one commit.
    pub(crate) async fn retire(
        &self,
        actor: &str,
        key_id: KeyId,
        reason: &str,
    ) -> Result<(SigningKey, Revocation), ApiError> {
        let _guard = self.key_lock.lock().await;
        let keys = self.store.signing_keys().await?;
        let key = keys
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| ApiError::NotFound(format!("signing key {key_id} does not exist (KeyService.List)")))?;
        match key.state {
            KeyState::Active if self.minting.contains(&key.algorithm) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "key {key_id} is the active minting key; rotate first (KeyService.Rotate), or move the \
                     policies that mint with {} to another algorithm, then retire it",
                    key.algorithm
                )));
            }
            KeyState::Active => {}
            KeyState::Retired => {
                return Err(ApiError::FailedPrecondition(format!("key {key_id} is already retired")));
            }
            KeyState::Pending | KeyState::VerifyOnly => {}
        }
        let now = self.clock.now_secs();
        let key = SigningKey { state: KeyState::Retired, retired_at: Some(now), ..key };
        let revocation = Revocation {
            version: 0,
            target: Target::Key { key_id },
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            created_at: now,
            expires_at: now + self.revocation_lifetime_secs,
        };
        let writes = vec![
            Write::PutKey { key: key.clone(), create: false },
            Write::Append {
                at: now,
                actor: actor.to_owned(),
                kind: ChangeKind::Key { key_id, state: KeyState::Retired, algorithm: key.algorithm },
            },
            Write::Append { at: now, actor: actor.to_owned(), kind: ChangeKind::Revocation(revocation) },
        ];
        let audit =
            vec![AuditEvent::new(now, actor, AuditAction::KeyRetire, format!("key:{key_id}"), reason.to_owned())];
        let committed = self.store.commit(Batch { writes, audit }).await?;
        self.metrics.revocation(&Target::Key { key_id });
        self.keys.reload().await?;
        let revocation = committed
            .changes
            .into_iter()
            .find_map(|c| match c.kind {
                ChangeKind::Revocation(r) => Some(r),
                ChangeKind::Key { .. } | ChangeKind::Purge(_) | ChangeKind::ForeignKey { .. } => None,
            })
            .ok_or_else(|| ApiError::Internal("store did not return the key revocation".into()))?;
        tracing::info!(caller = %actor, key.id = key_id, version = revocation.version, "keys.retire");
        Ok((key, revocation))
    }
}
