//! `PurgeService`: Purge — a cache purge recorded in the change log (audited
//! as `purge`) that every edge applies to its cache; it revokes nothing. With
//! `wait`, confirmed by the expected edges like `Revoke` (`super::wait_for_edges`).
//!
//! Targets: a canonical prefix ending in `/`, one canonical path, or an asset,
//! which is stored as a prefix purge of the asset's path (assets are path
//! prefixes ending in `/`) with its id beside it.

use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::purge_service_server::PurgeService;
use stile_token::canonicalize_path;
use tonic::{Request, Response, Status};

use super::{check_reason, wait_for_edges};
use crate::auth::{Authenticator, Rpc};
use crate::clock::Clock;
use crate::config::Config;
use crate::confirm::Expectation;
use crate::error::ApiError;
use crate::fleet::ReplicaFleet;
use crate::model::{AuditAction, AuditEvent, ChangeKind, Purge, PurgeTarget, valid_name};
use crate::store::{Batch, Store, Write};

/// The purge service.
#[derive(Clone, Debug)]
pub(crate) struct Purges {
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) replicas: Arc<ReplicaFleet>,
}

#[tonic::async_trait]
impl PurgeService for Purges {
    async fn purge(&self, request: Request<pb::PurgeRequest>) -> Result<Response<pb::PurgeResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::Purge).await?;
        let mut req = request.into_inner();
        check_reason(&req.reason, false)?;
        // Checked before anything is committed.
        let expect = if req.wait { Some(Expectation::from_request(req.expect.take())?) } else { None };
        let (target, asset_id) = self.target(req.target.take()).await?;
        let now = self.clock.now_secs();
        let audit_target = if asset_id.is_empty() { target.to_string() } else { format!("asset:{asset_id}") };
        let purge = Purge {
            version: 0,
            target: target.clone(),
            asset_id,
            reason: req.reason.clone(),
            actor: caller.name.clone(),
            created_at: now,
            expires_at: now.saturating_add(self.config.sync.purge_retention_secs),
        };
        let audit = vec![AuditEvent::new(now, &caller.name, AuditAction::Purge, audit_target, req.reason)];
        let writes = vec![Write::Append { at: now, actor: caller.name.clone(), kind: ChangeKind::Purge(purge) }];
        let committed = self.store.commit(Batch { writes, audit }).await.map_err(ApiError::from)?;
        let purge = match committed.changes.into_iter().next().map(|c| c.kind) {
            Some(ChangeKind::Purge(p)) => p,
            _ => return Err(ApiError::Internal("store did not return the purge".into()).into()),
        };
        let version = purge.version;
        tracing::info!(caller = %caller.name, target = %purge.target, asset = %purge.asset_id, version, "purge");
        let mut response = pb::PurgeResponse { purge: Some(purge.into()), version, ..Default::default() };
        if let Some(expect) = expect {
            let w = wait_for_edges(&self.config, &self.replicas, version, &expect, req.wait_timeout_ms, "purge").await;
            response.waited_ms = w.waited_ms;
            response.lagging = w.lagging;
            response.confirmation = Some(w.confirmation);
        }
        Ok(Response::new(response))
    }
}

impl Purges {
    /// The request's target, checked; an asset becomes its path prefix (and its id).
    async fn target(&self, target: Option<pb::purge_request::Target>) -> Result<(PurgeTarget, String), ApiError> {
        use pb::purge_request::Target as T;
        match target {
            None => Err(ApiError::InvalidArgument("target is required: prefix, path or asset_id".into())),
            Some(T::Prefix(p)) => Ok((PurgeTarget::Prefix(purge_path("prefix", &p, true)?), String::new())),
            Some(T::Path(p)) => Ok((PurgeTarget::Path(purge_path("path", &p, false)?), String::new())),
            Some(T::AssetId(id)) => {
                if !valid_name(&id) {
                    return Err(ApiError::InvalidArgument(format!(
                        "asset_id {id:?} must be 1 to 64 characters of [a-z0-9._-]"
                    )));
                }
                let asset = self.store.asset(id.clone()).await.map_err(ApiError::from)?;
                let asset = asset.ok_or_else(|| ApiError::NotFound(format!("asset {id:?} does not exist")))?;
                Ok((PurgeTarget::Prefix(asset.path), id))
            }
        }
    }
}

/// A purge's path as given: canonical (exactly, so the operator purges what
/// the edges store), and a prefix ends in `/` while a path does not.
pub(crate) fn purge_path(field: &str, raw: &str, prefix: bool) -> Result<String, ApiError> {
    let invalid = ApiError::InvalidArgument;
    if raw.is_empty() {
        return Err(invalid(format!("{field} is empty: give a canonical path starting with '/'")));
    }
    let canonical = canonicalize_path(raw.as_bytes()).map_err(|e| invalid(format!("{field} {raw:?}: {e}")))?;
    if canonical != raw {
        return Err(invalid(format!("{field} {raw:?} is not canonical: the edges cache it as {canonical:?}")));
    }
    match (prefix, raw.ends_with('/')) {
        (true, false) => Err(invalid(format!(
            "prefix {raw:?} must end with '/' so it matches whole path segments (one object: path)"
        ))),
        (false, true) => Err(invalid(format!("path {raw:?} ends with '/': purge a tree with prefix"))),
        _ => Ok(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<String, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn purge_paths_are_canonical_and_shaped() {
        assert_eq!(purge_path("prefix", "/vod/abc/", true).unwrap(), "/vod/abc/");
        assert_eq!(purge_path("path", "/vod/abc/v1/seg3.ts", false).unwrap(), "/vod/abc/v1/seg3.ts");
        assert_eq!(purge_path("prefix", "/", true).unwrap(), "/");
        assert!(message(purge_path("prefix", "", true)).contains("prefix is empty"));
        assert!(message(purge_path("path", "vod/a.ts", false)).starts_with("path \"vod/a.ts\": "));
        let m = message(purge_path("prefix", "/vod/caf%c3%a9/", true));
        assert!(m.contains("not canonical") && m.contains("\"/vod/caf%C3%A9/\""), "{m}");
        assert!(message(purge_path("prefix", "/vod/x/../abc/", true)).contains("dot segment"));
        assert!(message(purge_path("prefix", "/vod/abc", true)).contains("must end with '/'"));
        assert!(message(purge_path("path", "/vod/abc/", false)).contains("ends with '/'"));
    }
}
