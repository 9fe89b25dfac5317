//! `LinkService`: Mint and MintBatch.

use std::collections::HashMap;
use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::link_service_server::LinkService;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Rpc};
use crate::clock::Clock;
use crate::config::Config;
use crate::convert::mint_params;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::mint;
use crate::model::{Asset, AuditAction, AuditEvent};
use crate::random;
use crate::signing::SigningKeys;
use crate::store::Store;

/// The link minting service.
#[derive(Clone, Debug)]
pub(crate) struct Links {
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: Arc<SigningKeys>,
    pub(crate) metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl LinkService for Links {
    async fn mint(&self, request: Request<pb::MintRequest>) -> Result<Response<pb::MintResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::Mint).await?;
        let req = request.into_inner();
        let counted = self.metrics.mints(&self.config, [(req.policy.as_str(), req.channel.as_str())]);
        let asset = mint::gate(&req.asset_id, self.store.asset(req.asset_id.clone()).await.map_err(ApiError::from)?)?;
        let now = self.clock.now_secs();
        let token_id = random::token_id()?;
        let link = self.keys.with_active(|key| {
            mint::mint(&self.config, &mint_params(&req), &asset, key, now, token_id).map(pb::Link::from)
        })?;
        let mut event =
            AuditEvent::new(now, &caller.name, AuditAction::Mint, format!("asset:{}", asset.id), link.token_id.clone());
        event.channel = req.channel;
        self.store.record_audit(vec![event]).await.map_err(ApiError::from)?;
        tracing::debug!(caller = %caller.name, asset.id = %asset.id, token.id = %link.token_id, "mint");
        counted.succeeded();
        Ok(Response::new(pb::MintResponse { link: Some(link) }))
    }

    async fn mint_batch(
        &self,
        request: Request<pb::MintBatchRequest>,
    ) -> Result<Response<pb::MintBatchResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::MintBatch).await?;
        let requests = request.into_inner().requests;
        let counted =
            self.metrics.mints(&self.config, requests.iter().map(|r| (r.policy.as_str(), r.channel.as_str())));
        let max = self.config.links.max_batch;
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
                let found = self.store.asset(req.asset_id.clone()).await.map_err(ApiError::from)?;
                let asset = mint::gate(&req.asset_id, found).map_err(|e| e.context(&format!("requests[{i}]")))?;
                assets.insert(&req.asset_id, asset);
            }
        }
        let now = self.clock.now_secs();
        let links = self.keys.with_active(|key| {
            requests
                .iter()
                .enumerate()
                .map(|(i, req)| {
                    let asset = &assets[req.asset_id.as_str()];
                    random::token_id()
                        .and_then(|token_id| mint::mint(&self.config, &mint_params(req), asset, key, now, token_id))
                        .map(pb::Link::from)
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
        self.store.record_audit(vec![event]).await.map_err(ApiError::from)?;
        tracing::info!(caller = %caller.name, count = links.len(), assets = assets.len(), "mint.batch");
        counted.succeeded();
        Ok(Response::new(pb::MintBatchResponse { links }))
    }
}
