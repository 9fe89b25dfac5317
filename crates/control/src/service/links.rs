//! `LinkService`: Mint and MintBatch.

use std::collections::HashMap;
use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::link_service_server::LinkService;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::auth::Rpc;
use crate::error::ApiError;
use crate::mint::{self, MintKey};
use crate::model::{Asset, AuditAction, AuditEvent};

/// The link minting service.
#[derive(Clone, Debug)]
pub(crate) struct Links(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl LinkService for Links {
    async fn mint(&self, request: Request<pb::MintRequest>) -> Result<Response<pb::MintResponse>, Status> {
        let s = &self.0;
        let caller = s.auth.check(&request, Rpc::Mint).await?;
        let req = request.into_inner();
        let counted = s.metrics.mints(&s.config, [(req.policy.as_str(), req.channel.as_str())]);
        let asset = mint::gate(&req.asset_id, s.store.asset(req.asset_id.clone()).await.map_err(ApiError::from)?)?;
        let now = s.now();
        let link = s.with_active_key(|id, ring| mint::mint(&s.config, &req, &asset, MintKey { id, ring }, now))?;
        let mut event =
            AuditEvent::new(now, &caller.name, AuditAction::Mint, format!("asset:{}", asset.id), link.token_id.clone());
        event.channel = req.channel;
        s.store.record_audit(vec![event]).await.map_err(ApiError::from)?;
        tracing::debug!(caller = %caller.name, asset.id = %asset.id, token.id = %link.token_id, "mint");
        counted.ok();
        Ok(Response::new(pb::MintResponse { link: Some(link) }))
    }

    async fn mint_batch(
        &self,
        request: Request<pb::MintBatchRequest>,
    ) -> Result<Response<pb::MintBatchResponse>, Status> {
        let s = &self.0;
        let caller = s.auth.check(&request, Rpc::MintBatch).await?;
        let requests = request.into_inner().requests;
        let counted = s.metrics.mints(&s.config, requests.iter().map(|r| (r.policy.as_str(), r.channel.as_str())));
        let max = s.config.links.max_batch;
        if requests.is_empty() || requests.len() > max {
            return Err(ApiError::InvalidArgument(format!(
                "a batch holds 1 to {max} requests (links.max_batch), got {}",
                requests.len()
            ))
            .into());
        }
        // Each asset is read once per batch.
        let mut assets: HashMap<&str, Asset> = HashMap::new();
        for (i, req) in requests.iter().enumerate() {
            if !assets.contains_key(req.asset_id.as_str()) {
                let found = s.store.asset(req.asset_id.clone()).await.map_err(ApiError::from)?;
                let asset = mint::gate(&req.asset_id, found).map_err(|e| e.context(&format!("requests[{i}]")))?;
                assets.insert(&req.asset_id, asset);
            }
        }
        let now = s.now();
        let links = s.with_active_key(|id, ring| {
            requests
                .iter()
                .enumerate()
                .map(|(i, req)| {
                    mint::mint(&s.config, req, &assets[req.asset_id.as_str()], MintKey { id, ring }, now)
                        .map_err(|e| e.context(&format!("requests[{i}]")))
                })
                .collect::<Result<Vec<_>, _>>()
        })?;

        let target = match assets.len() {
            1 => format!("asset:{}", requests[0].asset_id),
            n => format!("assets:{n}"),
        };
        let mut event = AuditEvent::new(now, &caller.name, AuditAction::MintBatch, target, String::new());
        event.count = u32::try_from(links.len()).unwrap_or(u32::MAX);
        if requests.iter().all(|r| r.channel == requests[0].channel) {
            event.channel = requests[0].channel.clone();
        }
        s.store.record_audit(vec![event]).await.map_err(ApiError::from)?;
        tracing::info!(caller = %caller.name, count = links.len(), assets = assets.len(), "mint.batch");
        counted.ok();
        Ok(Response::new(pb::MintBatchResponse { links }))
    }
}
