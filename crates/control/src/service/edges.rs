//! `EdgeService`: List (the fleet registry) and Sync (the edge stream, in
//! [`crate::sync`]).

use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::edge_service_server::EdgeService;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authenticator, Rpc};
use crate::error::ApiError;
use crate::fleet::{EdgeView, ReplicaFleet};
use crate::store::Store;
use crate::sync::{SyncCtx, SyncStream};

/// The edge fleet service.
#[derive(Clone, Debug)]
pub(crate) struct Edges {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) replicas: Arc<ReplicaFleet>,
    pub(crate) sync: Arc<SyncCtx>,
}

#[tonic::async_trait]
impl EdgeService for Edges {
    async fn list(&self, request: Request<pb::ListEdgesRequest>) -> Result<Response<pb::ListEdgesResponse>, Status> {
        self.auth.check(&request, Rpc::ListEdges).await?;
        let departed = request.get_ref().include_departed;
        let current_version = self.store.version().await.map_err(ApiError::from)?;
        let known = if departed { self.replicas.known().await } else { self.replicas.everywhere().await };
        let edges = known.into_iter().map(|e| edge_info(e, current_version)).collect();
        Ok(Response::new(pb::ListEdgesResponse { edges, current_version }))
    }

    type SyncStream = SyncStream;

    async fn sync(&self, request: Request<Streaming<pb::EdgeMessage>>) -> Result<Response<Self::SyncStream>, Status> {
        let caller = self.auth.check(&request, Rpc::Sync).await?;
        let remote = request.remote_addr();
        let client_cert = crate::tls::client_identity(&request);
        Ok(Response::new(self.sync.open(caller, remote, client_cert, request.into_inner())))
    }
}

/// The wire form of a registry entry; `lag` against `current`.
pub(crate) fn edge_info(e: EdgeView, current: u64) -> pb::EdgeInfo {
    pb::EdgeInfo {
        lag: current.saturating_sub(e.applied),
        edge_id: e.edge_id,
        applied_version: e.applied,
        clock_skew_ms: e.skew_ms,
        connected_at: e.connected_at,
        remote_addr: e.remote_addr,
        client_cert: e.client_cert,
        agent: e.agent,
        departed: e.departed,
        last_seen_ms: e.last_seen_ms,
        nacks: e.nacks,
        last_error: e.last_error,
        snapshots: e.snapshots,
        deltas: e.deltas,
        rtt_ms: e.rtt_ms,
        sent_version: e.sent,
    }
}
