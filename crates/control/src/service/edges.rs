//! `EdgeService`: List (empty until edge sync exists) and Sync (issue 4).

use std::pin::Pin;
use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::edge_service_server::EdgeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::auth::Rpc;
use crate::error::ApiError;

/// The edge fleet service.
#[derive(Clone, Debug)]
pub(crate) struct Edges(pub(crate) Arc<Shared>);

#[tonic::async_trait]
impl EdgeService for Edges {
    async fn list(&self, request: Request<pb::ListEdgesRequest>) -> Result<Response<pb::ListEdgesResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListEdges).await?;
        let current_version = self.0.store.version().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListEdgesResponse { edges: Vec::new(), current_version }))
    }

    type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::ControlMessage, Status>> + Send + 'static>>;

    async fn sync(&self, request: Request<Streaming<pb::EdgeMessage>>) -> Result<Response<Self::SyncStream>, Status> {
        self.0.auth.check(&request, Rpc::Sync).await?;
        Err(ApiError::Unimplemented("edge sync is not available in this control plane version yet".into()).into())
    }
}
