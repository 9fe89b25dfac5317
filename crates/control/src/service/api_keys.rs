//! `ApiKeyService` (admin only): Create, List, Delete.

use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::api_key_service_server::ApiKeyService;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Rpc, generate_api_key};
use crate::clock::Clock;
use crate::convert::{api_key_info, role};
use crate::error::ApiError;
use crate::model::{ApiKey, AuditAction, AuditEvent, valid_name};
use crate::store::{Batch, Store, StoreError, Write};

/// The API key service.
#[derive(Clone, Debug)]
pub(crate) struct ApiKeys {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::CreateApiKey).await?;
        let req = request.into_inner();
        if !valid_name(&req.name) {
            return Err(ApiError::InvalidArgument(format!(
                "name {:?} must be 1 to 64 characters of [a-z0-9._-]",
                req.name
            ))
            .into());
        }
        let role = role(req.role)?;
        crate::identity::check_edge_ids(role, &req.edge_ids).map_err(ApiError::InvalidArgument)?;
        if self.auth.configured().any(|c| c.name == req.name) {
            return Err(
                ApiError::AlreadyExists(format!("API key name {:?} is defined in the config file", req.name)).into()
            );
        }
        let (key, sha256) = generate_api_key()?;
        let now = self.clock.now_secs();
        let record = ApiKey {
            name: req.name,
            role,
            sha256,
            created_at: now,
            created_by: caller.name.clone(),
            edge_ids: req.edge_ids,
        };
        let audit = vec![AuditEvent::new(
            now,
            &caller.name,
            AuditAction::ApiKeyCreate,
            format!("api_key:{}", record.name),
            if record.edge_ids.is_empty() {
                role.name().into()
            } else {
                format!("{} for edge ids {}", role.name(), record.edge_ids.join(","))
            },
        )];
        self.store.commit(Batch { writes: vec![Write::PutApiKey(record.clone())], audit }).await.map_err(
            |e| match e {
                StoreError::Conflict(m) => ApiError::AlreadyExists(m),
                other => ApiError::Store(other),
            },
        )?;
        tracing::info!(caller = %caller.name, api_key = %record.name, role = %role, "api_keys.create");
        Ok(Response::new(pb::CreateApiKeyResponse { info: Some(api_key_info(&record)), key }))
    }

    async fn list(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.auth.check(&request, Rpc::ListApiKeys).await?;
        let stored = self.store.api_keys().await.map_err(ApiError::from)?;
        let mut keys: Vec<pb::ApiKeyInfo> = stored.iter().map(api_key_info).collect();
        keys.extend(self.auth.configured().map(|c| pb::ApiKeyInfo {
            name: c.name.clone(),
            role: pb::Role::from(c.role).into(),
            created_at: 0,
            created_by: "config".into(),
            edge_ids: c.edge_ids.clone(),
        }));
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListApiKeysResponse { keys }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let caller = self.auth.check(&request, Rpc::DeleteApiKey).await?;
        let name = request.into_inner().name;
        if self.auth.configured().any(|c| c.name == name) {
            return Err(ApiError::FailedPrecondition(format!(
                "API key {name:?} is defined in the config file; remove it there"
            ))
            .into());
        }
        let now = self.clock.now_secs();
        let audit = vec![AuditEvent::new(
            now,
            &caller.name,
            AuditAction::ApiKeyDelete,
            format!("api_key:{name}"),
            String::new(),
        )];
        self.store.commit(Batch { writes: vec![Write::DeleteApiKey { name: name.clone() }], audit }).await.map_err(
            |e| match e {
                StoreError::Conflict(_) => ApiError::NotFound(format!("API key {name:?} does not exist")),
                other => ApiError::Store(other),
            },
        )?;
        tracing::info!(caller = %caller.name, api_key = %name, "api_keys.delete");
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }
}
