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
mod purges;
mod revocations;

pub(crate) use self::api_keys::ApiKeys;
pub(crate) use self::assets::Assets;
pub(crate) use self::audit::Audit;
pub(crate) use self::edges::Edges;
pub(crate) use self::keys::{KeyRollout, Keys};
pub(crate) use self::links::Links;
pub(crate) use self::purges::Purges;
pub(crate) use self::revocations::Revocations;
use crate::config::Config;
use crate::confirm::{Expectation, confirm, lagging};
use crate::error::ApiError;
use crate::fleet::ReplicaFleet;

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

/// What a `wait` found: the confirmation, the expected edges that had not
/// applied the version, and how long it waited.
pub(crate) struct Waited {
    pub(crate) confirmation: stile_proto::v1::Confirmation,
    pub(crate) lagging: Vec<String>,
    pub(crate) waited_ms: u32,
}

/// Waits until every expected edge applied `version` or the deadline
/// (`timeout_ms`; 0: `sync.revoke_wait_default_ms`, capped at
/// `sync.revoke_wait_max_ms`), and logs the verdict as `<what>.confirmed` or
/// `<what>.not_confirmed`. Shared by `Revoke` and `Purge`.
pub(crate) async fn wait_for_edges(
    config: &Config,
    replicas: &ReplicaFleet,
    version: u64,
    expect: &Expectation,
    timeout_ms: u32,
    what: &'static str,
) -> Waited {
    use stile_proto::v1::ConfirmationVerdict as V;
    let ms = match timeout_ms {
        0 => config.sync.revoke_wait_default_ms,
        n => u64::from(n).min(config.sync.revoke_wait_max_ms),
    };
    let started = tokio::time::Instant::now();
    let window = replicas.window_secs();
    let confirmed = |edges: &[_]| confirm(version, edges, expect, window).verdict() == V::Confirmed;
    let known = replicas.wait_until(started + std::time::Duration::from_millis(ms), confirmed).await;
    let c = confirm(version, &known, expect, window);
    let waited_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    let lagging = lagging(&c);
    if c.verdict() == V::Confirmed {
        tracing::info!(what, version, edges = c.confirmed, waited_ms, "{what}.confirmed");
    } else {
        tracing::warn!(
            what,
            version,
            verdict = c.verdict().as_str_name(),
            confirmed = c.confirmed,
            expected = c.expected,
            lagging = ?lagging,
            waited_ms,
            summary = %c.summary,
            "{what}.not_confirmed"
        );
    }
    Waited { confirmation: c, lagging, waited_ms }
}
