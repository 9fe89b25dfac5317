//! The gRPC services. Each handler authenticates and checks the caller's role
//! first ([`crate::auth`]), validates, commits one batch, then answers; errors
//! become statuses in [`crate::error`].
//!
//! Each service holds only what it touches: the authenticator, the store and
//! the clock, plus — where it needs them — the signing keys
//! ([`crate::signing::SigningKeys`]), the key rollout ([`KeyRollout`]), the
//! fleet across replicas ([`crate::fleet::ReplicaFleet`]), the sync sessions
//! ([`crate::sync::SyncCtx`]) or the metrics.

mod api_keys;
mod assets;
mod audit;
mod edges;
mod keys;
mod links;
mod revocations;

pub(crate) use self::api_keys::ApiKeys;
pub(crate) use self::assets::Assets;
pub(crate) use self::audit::Audit;
pub(crate) use self::edges::Edges;
pub(crate) use self::keys::{KeyRollout, Keys};
pub(crate) use self::links::Links;
pub(crate) use self::revocations::Revocations;
use crate::error::ApiError;

/// Page size from a request's `limit`: 0 means 100, capped at 1000.
pub(crate) fn page_limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// Checks a free-text reason: `1..=200` characters when required, else `0..=200`.
pub(crate) fn check_reason(reason: &str, required: bool) -> Result<(), ApiError> {
    let len = reason.chars().count();
    if (required && len == 0) || len > 200 {
        let what = if required { "1 to 200" } else { "at most 200" };
        return Err(ApiError::InvalidArgument(format!("reason must be {what} characters, got {len}")));
    }
    Ok(())
}
