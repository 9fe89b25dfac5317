//! `AuditService`: List with filters.

use std::sync::Arc;

use stile_proto::v1 as pb;
use stile_proto::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

use super::page_limit;
use crate::auth::{Authenticator, Rpc};
use crate::convert::audit_action;
use crate::error::ApiError;
use crate::store::{AuditQuery, Store};

/// The audit log reader.
#[derive(Clone, Debug)]
pub(crate) struct Audit {
    pub(crate) auth: Authenticator,
    pub(crate) store: Arc<dyn Store>,
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list(&self, request: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.auth.check(&request, Rpc::ListAudit).await?;
        let req = request.into_inner();
        if req.until != 0 && req.until <= req.since {
            return Err(
                ApiError::InvalidArgument(format!("until {} must be after since {}", req.until, req.since)).into()
            );
        }
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let query = AuditQuery {
            actor: non_empty(req.actor),
            action: audit_action(req.action)?,
            channel: non_empty(req.channel),
            since: req.since,
            until: (req.until != 0).then_some(req.until),
            before_seq: (req.before_seq != 0).then_some(req.before_seq),
            limit: page_limit(req.limit),
        };
        let events = self.store.audit(query).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListAuditResponse { events: events.into_iter().map(Into::into).collect() }))
    }
}
