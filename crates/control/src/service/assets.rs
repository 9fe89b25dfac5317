//! `AssetService`: Put, SetState, Get, List — the publish gate's state.

use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::asset_service_server::AssetService;
use stile_token::canonicalize_path;
use tonic::{Request, Response, Status};

use super::page_limit;
use crate::auth::{Authenticator, Rpc};
use crate::clock::Clock;
use crate::convert::asset_state;
use crate::error::ApiError;
use crate::model::{Asset, AssetState, AuditAction, AuditEvent, valid_name};
use crate::store::{AssetQuery, Batch, Store, StoreError, Write};

/// The asset service.
#[derive(Clone, Debug)]
pub(crate) struct Assets {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
}

#[tonic::async_trait]
impl AssetService for Assets {
    async fn put(&self, request: Request<pb::PutAssetRequest>) -> Result<Response<pb::PutAssetResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::PutAsset).await?;
        let req = request.into_inner();
        let invalid = ApiError::InvalidArgument;
        if !valid_name(&req.id) {
            return Err(invalid(format!("asset id {:?} must be 1 to 64 characters of [a-z0-9._-]", req.id)).into());
        }
        let path = canonicalize_path(req.path.as_bytes())
            .map_err(|e| invalid(format!("path {:?}: {e}", req.path)))?
            .into_owned();
        if !path.ends_with('/') || path.len() > stile_token::MAX_SCOPE_LEN {
            return Err(invalid(format!("path {path:?} must end with '/' and be at most 255 bytes")).into());
        }
        if req.entry.starts_with('/') || req.entry.ends_with('/') {
            return Err(invalid(format!("entry {:?} must be a file path relative to the asset path", req.entry)).into());
        }
        if !req.entry.is_empty() {
            let joined = format!("{path}{}", req.entry);
            match canonicalize_path(joined.as_bytes()) {
                Ok(c) if c == joined => {}
                _ => return Err(invalid(format!("entry {:?} is not a canonical relative path", req.entry)).into()),
            }
        }
        let now = self.clock.now_secs();
        let existing = self.store.asset(req.id.clone()).await.map_err(ApiError::from)?;
        let (asset, expected_revision) = match existing {
            None => (
                Asset {
                    id: req.id.clone(),
                    path,
                    entry: req.entry,
                    state: AssetState::Draft,
                    revision: 1,
                    created_at: now,
                    updated_at: now,
                    updated_by: caller.name.clone(),
                },
                0,
            ),
            Some(old) => {
                if old.path != path {
                    return Err(ApiError::FailedPrecondition(format!(
                        "asset {:?} has path {}; a path cannot change, create a new asset instead",
                        old.id, old.path
                    ))
                    .into());
                }
                if old.state == AssetState::Archived {
                    return Err(ApiError::FailedPrecondition(format!("asset {:?} is ARCHIVED (final)", old.id)).into());
                }
                let revision = old.revision;
                (
                    Asset {
                        entry: req.entry,
                        revision: revision + 1,
                        updated_at: now,
                        updated_by: caller.name.clone(),
                        ..old
                    },
                    revision,
                )
            }
        };
        let created = expected_revision == 0;
        let detail = if created { "created" } else { "updated" };
        let audit = vec![AuditEvent::new(
            now,
            &caller.name,
            AuditAction::AssetPut,
            format!("asset:{}", asset.id),
            detail.into(),
        )];
        self.commit(asset.clone(), expected_revision, audit).await?;
        tracing::info!(caller = %caller.name, asset.id = %asset.id, created, "assets.put");
        Ok(Response::new(pb::PutAssetResponse { asset: Some(asset.into()), created }))
    }

    async fn set_state(
        &self,
        request: Request<pb::SetAssetStateRequest>,
    ) -> Result<Response<pb::SetAssetStateResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::SetAssetState).await?;
        let req = request.into_inner();
        let to = asset_state(req.state)
            .ok_or_else(|| ApiError::InvalidArgument("state must be DRAFT, READY, PUBLISHED or ARCHIVED".into()))?;
        let old = self
            .store
            .asset(req.id.clone())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("asset {:?} does not exist", req.id)))?;
        if req.expected_revision != 0 && req.expected_revision != old.revision {
            return Err(ApiError::Store(StoreError::Conflict(format!(
                "asset {:?} is at revision {}, not {}",
                old.id, old.revision, req.expected_revision
            )))
            .into());
        }
        if old.state == to {
            return Err(ApiError::FailedPrecondition(format!("asset {:?} is already {}", old.id, to.name())).into());
        }
        if !old.state.can_move_to(to) {
            return Err(ApiError::FailedPrecondition(format!(
                "asset {:?} cannot move from {} to {}; allowed: DRAFT->READY->PUBLISHED, back one step, or to ARCHIVED (final)",
                old.id,
                old.state.name(),
                to.name()
            ))
            .into());
        }
        let now = self.clock.now_secs();
        let detail = format!("{}->{}", old.state.name(), to.name());
        let revision = old.revision;
        let asset =
            Asset { state: to, revision: revision + 1, updated_at: now, updated_by: caller.name.clone(), ..old };
        let audit =
            vec![AuditEvent::new(now, &caller.name, AuditAction::AssetState, format!("asset:{}", asset.id), detail)];
        self.commit(asset.clone(), revision, audit).await?;
        tracing::info!(caller = %caller.name, asset.id = %asset.id, state = to.name(), "assets.state");
        Ok(Response::new(pb::SetAssetStateResponse { asset: Some(asset.into()) }))
    }

    async fn get(&self, request: Request<pb::GetAssetRequest>) -> Result<Response<pb::GetAssetResponse>, Status> {
        self.auth.check(&request, Rpc::GetAsset).await?;
        let id = request.into_inner().id;
        let asset = self
            .store
            .asset(id.clone())
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("asset {id:?} does not exist")))?;
        Ok(Response::new(pb::GetAssetResponse { asset: Some(asset.into()) }))
    }

    async fn list(&self, request: Request<pb::ListAssetsRequest>) -> Result<Response<pb::ListAssetsResponse>, Status> {
        self.auth.check(&request, Rpc::ListAssets).await?;
        let req = request.into_inner();
        let state = match req.state {
            0 => None,
            v => Some(asset_state(v).ok_or_else(|| ApiError::InvalidArgument(format!("unknown asset state {v}")))?),
        };
        let query = AssetQuery { state, after_id: req.after_id, limit: page_limit(req.limit) };
        let assets = self.store.assets(query).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListAssetsResponse { assets: assets.into_iter().map(Into::into).collect() }))
    }
}

impl Assets {
    async fn commit(&self, asset: Asset, expected_revision: u64, audit: Vec<AuditEvent>) -> Result<(), ApiError> {
        self.store.commit(Batch { writes: vec![Write::PutAsset { asset, expected_revision }], audit }).await?;
        Ok(())
    }
}
