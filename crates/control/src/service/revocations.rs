//! `RevocationService`: Revoke (durable before it answers; with `wait`, also
//! confirmed by every expected edge — connected, or seen within
//! `sync.seen_window_secs`, or the operator's named set — or answered with
//! what it was confirmed by: `crate::confirm`), RevokeBatch (many
//! revocations in one atomic commit, one audit event, waited for like Revoke),
//! List, Status.

use std::sync::Arc;
use stile_proto::v1 as pb;
use stile_proto::v1::revocation_service_server::RevocationService;
use stile_token::{TokenId, canonicalize_path};
use tonic::{Request, Response, Status};

use super::{KeyRollout, check_reason, page_limit, wait_for_edges};
use crate::auth::{Authenticator, Rpc};
use crate::clock::Clock;
use crate::config::Config;
use crate::confirm::{Expectation, edge_ack};
use crate::error::ApiError;
use crate::fleet::ReplicaFleet;
use crate::metrics::Metrics;
use crate::model::{AuditAction, AuditEvent, ChangeKind, Revocation, Target};
use crate::store::{Batch, Store, Write};

/// The revocation service.
#[derive(Clone, Debug)]
pub(crate) struct Revocations {
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) rollout: Arc<KeyRollout>,
    pub(crate) replicas: Arc<ReplicaFleet>,
    pub(crate) metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl RevocationService for Revocations {
    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::Revoke).await?;
        let mut req = request.into_inner();
        check_reason(&req.reason, true)?;
        // Checked before anything is committed.
        let expect = if req.wait { Some(Expectation::from_request(req.expect.take())?) } else { None };
        let now = self.clock.now_secs();
        let target = target(req.target, now)?;
        let revocation = if let Target::Key { key_id } = target {
            self.rollout.retire(&caller.name, key_id, &req.reason).await?.1
        } else {
            let revocation = self.revocation(target.clone(), &req.reason, &caller.name, now);
            let audit = vec![AuditEvent::new(now, &caller.name, AuditAction::Revoke, target.to_string(), req.reason)];
            let writes =
                vec![Write::Append { at: now, actor: caller.name.clone(), kind: ChangeKind::Revocation(revocation) }];
            let committed = self.store.commit(Batch { writes, audit }).await.map_err(ApiError::from)?;
            self.metrics.revocation(&target);
            match committed.changes.into_iter().next().map(|c| c.kind) {
                Some(ChangeKind::Revocation(r)) => r,
                _ => return Err(ApiError::Internal("store did not return the revocation".into()).into()),
            }
        };
        let version = revocation.version;
        tracing::info!(caller = %caller.name, target = %revocation.target, version, "revoke");
        let mut response = pb::RevokeResponse { revocation: Some(revocation.into()), version, ..Default::default() };
        if let Some(expect) = expect {
            let w = wait_for_edges(&self.config, &self.replicas, version, &expect, req.wait_timeout_ms, "revoke").await;
            response.waited_ms = w.waited_ms;
            response.lagging = w.lagging;
            response.edges = w.confirmation.edges.clone();
            response.confirmation = Some(w.confirmation);
        }
        Ok(Response::new(response))
    }

    async fn revoke_batch(
        &self,
        request: Request<pb::RevokeBatchRequest>,
    ) -> Result<Response<pb::RevokeBatchResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::RevokeBatch).await?;
        let mut req = request.into_inner();
        check_reason(&req.reason, true)?;
        // Checked before anything is committed.
        let expect = if req.wait { Some(Expectation::from_request(req.expect.take())?) } else { None };
        let (n, max) = (req.targets.len(), self.config.revocations.max_batch);
        if !(1..=max).contains(&n) {
            let why = format!("targets: {n} given; a batch holds 1 to {max} (revocations.max_batch)");
            return Err(ApiError::InvalidArgument(why).into());
        }
        let now = self.clock.now_secs();
        // Every target is checked before anything is written: all or nothing.
        let mut targets = Vec::with_capacity(n);
        for (i, t) in req.targets.into_iter().enumerate() {
            let target = target(Some(t), now).map_err(|e| e.context(&format!("targets[{i}]")))?;
            if let Target::Key { key_id } = target {
                let why =
                    format!("targets[{i}]: key {key_id} is retired with Revoke or KeyService.Retire, not in a batch");
                return Err(ApiError::InvalidArgument(why).into());
            }
            targets.push(target);
        }
        let summary = batch_summary(&targets);
        let writes = targets
            .iter()
            .map(|t| Write::Append {
                at: now,
                actor: caller.name.clone(),
                kind: ChangeKind::Revocation(self.revocation(t.clone(), &req.reason, &caller.name, now)),
            })
            .collect();
        let mut event = AuditEvent::new(now, &caller.name, AuditAction::RevokeBatch, summary, req.reason);
        event.count = u32::try_from(n).unwrap_or(u32::MAX);
        let committed = self.store.commit(Batch { writes, audit: vec![event] }).await.map_err(ApiError::from)?;
        for t in &targets {
            self.metrics.revocation(t);
        }
        let (Some(first), Some(last)) = (committed.changes.first(), committed.changes.last()) else {
            return Err(ApiError::Internal("store did not return the revocations".into()).into());
        };
        let (first_version, last_version) = (first.version, last.version);
        tracing::info!(caller = %caller.name, count = n, first_version, last_version, "revoke.batch");
        let mut response = pb::RevokeBatchResponse {
            count: u32::try_from(n).unwrap_or(u32::MAX),
            first_version,
            last_version,
            ..Default::default()
        };
        if let Some(expect) = expect {
            let w = wait_for_edges(&self.config, &self.replicas, last_version, &expect, req.wait_timeout_ms, "revoke")
                .await;
            response.waited_ms = w.waited_ms;
            response.lagging = w.lagging;
            response.confirmation = Some(w.confirmation);
        }
        Ok(Response::new(response))
    }

    async fn list(
        &self,
        request: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        self.auth.check(&request, Rpc::ListRevocations).await?;
        let req = request.into_inner();
        let now = self.clock.now_secs();
        let found = self.store.revocations(req.after_version, page_limit(req.limit)).await.map_err(ApiError::from)?;
        // Pruning runs periodically; hide what has expired since.
        let revocations = found.into_iter().filter(|r| r.expires_at > now).map(Into::into).collect();
        Ok(Response::new(pb::ListRevocationsResponse { revocations }))
    }

    async fn status(
        &self,
        request: Request<pb::RevocationStatusRequest>,
    ) -> Result<Response<pb::RevocationStatusResponse>, Status> {
        self.auth.check(&request, Rpc::RevocationStatus).await?;
        let asked = request.into_inner().version;
        let current = self.store.version().await.map_err(ApiError::from)?;
        let version = if asked == 0 { current } else { asked };
        let edges = self.replicas.known().await.iter().map(|e| edge_ack(e, version)).collect();
        Ok(Response::new(pb::RevocationStatusResponse {
            current_version: current,
            version,
            committed: version <= current,
            edges,
        }))
    }
}

impl Revocations {
    /// A revocation of `target` (not a key) recorded now, kept for the
    /// longest token lifetime from its base time.
    fn revocation(&self, target: Target, reason: &str, actor: &str, now: u64) -> Revocation {
        let base = match &target {
            Target::Subject { issued_before, .. } | Target::PathPrefix { issued_before, .. } => *issued_before,
            Target::Token { .. } | Target::Key { .. } => now,
        };
        Revocation {
            version: 0,
            target,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            created_at: now,
            expires_at: base + self.config.revocation_lifetime_secs(),
        }
    }
}

/// The audit target of a batch: how many of each kind, e.g. `tokens:49000,subjects:1000`.
fn batch_summary(targets: &[Target]) -> String {
    let mut counts = [0usize; 3];
    for t in targets {
        match t {
            Target::Token { .. } => counts[0] += 1,
            Target::Subject { .. } => counts[1] += 1,
            Target::PathPrefix { .. } | Target::Key { .. } => counts[2] += 1,
        }
    }
    let names = ["tokens", "subjects", "prefixes"];
    let parts: Vec<String> =
        names.iter().zip(counts).filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name}:{n}")).collect();
    parts.join(",")
}

/// Validates a request's target; times default to `now` and may not be later.
fn target(target: Option<pb::RevocationTarget>, now: u64) -> Result<Target, ApiError> {
    use pb::revocation_target::Target as T;
    let invalid = ApiError::InvalidArgument;
    let issued_before = |t: u64| match t {
        0 => Ok(now),
        t if t <= now => Ok(t),
        t => Err(invalid(format!("issued_before {t} is in the future (now {now}); revocations cover issued links"))),
    };
    match target.and_then(|t| t.target) {
        None => Err(invalid("target is required: token_id, subject, path_prefix or key_id".into())),
        Some(T::TokenId(hex)) => {
            let id = TokenId::from_hex(&hex)
                .ok_or_else(|| invalid(format!("token_id {hex:?} must be 16 hex digits (Link.token_id)")))?;
            Ok(Target::Token { token_id: id.as_u64() })
        }
        Some(T::Subject(t)) => {
            let ok = (1..=stile_token::MAX_SUBJECT_LEN).contains(&t.subject.len())
                && t.subject.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !ok {
                return Err(invalid("subject must be 1 to 64 visible ASCII characters".into()));
            }
            Ok(Target::Subject { subject: t.subject, issued_before: issued_before(t.issued_before)? })
        }
        Some(T::PathPrefix(t)) => {
            let prefix = canonicalize_path(t.prefix.as_bytes())
                .map_err(|e| invalid(format!("path_prefix {:?}: {e}", t.prefix)))?
                .into_owned();
            if !prefix.ends_with('/') {
                return Err(invalid(format!(
                    "path_prefix {prefix:?} must end with '/' so it matches whole path segments"
                )));
            }
            Ok(Target::PathPrefix { prefix, issued_before: issued_before(t.issued_before)?, purge: t.purge })
        }
        Some(T::KeyId(key_id)) => Ok(Target::Key { key_id }),
    }
}
