//! Authentication and authorisation: bearer API keys, stored as SHA-256
//! hashes, each with one [`Role`]; [`Rpc::allowed`] is the single table of who
//! may call what.
//!
//! Every denied call is logged (`auth.denied`: client address, method, the
//! key's name or, for a key nobody knows, its fingerprint — never the key)
//! within a global budget per minute, counted
//! (`stile_control_auth_denied_total{reason}`), and, when the call writes
//! ([`Rpc::writes`]), audited (`AUTH_DENIED`, the first few per source and
//! window); a source with too many failures is backed off (`crate::guard`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::AuthConfig;
use crate::error::ApiError;
use crate::guard::AuthGuard;
use crate::locks;
use crate::metrics::Metrics;
pub use crate::model::Role;
use crate::model::{AuditAction, AuditEvent};
use crate::random;
use crate::store::Store;

/// Every RPC that checks a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// LinkService.Mint
    Mint,
    /// LinkService.MintBatch
    MintBatch,
    /// RevocationService.Revoke
    Revoke,
    /// RevocationService.RevokeBatch
    RevokeBatch,
    /// RevocationService.List
    ListRevocations,
    /// RevocationService.Status
    RevocationStatus,
    /// KeyService.Rotate
    RotateKey,
    /// KeyService.List
    ListKeys,
    /// KeyService.Retire
    RetireKey,
    /// KeyService.AddForeign
    AddForeignKey,
    /// KeyService.RemoveForeign
    RemoveForeignKey,
    /// KeyService.ListForeign
    ListForeignKeys,
    /// AssetService.Put
    PutAsset,
    /// AssetService.SetState
    SetAssetState,
    /// AssetService.Get
    GetAsset,
    /// AssetService.List
    ListAssets,
    /// EdgeService.List
    ListEdges,
    /// EdgeService.Sync
    Sync,
    /// AuditService.List
    ListAudit,
    /// ApiKeyService.Create
    CreateApiKey,
    /// ApiKeyService.List
    ListApiKeys,
    /// ApiKeyService.Delete
    DeleteApiKey,
    /// PurgeService.Purge
    Purge,
}

impl Rpc {
    /// The roles allowed to call this RPC. Minting (audience access) and
    /// operator privileges never mix; an edge may only sync; admin may do all.
    pub const fn allowed(self) -> &'static [Role] {
        use Role::*;
        match self {
            Rpc::Mint | Rpc::MintBatch => &[Minter, Admin],
            Rpc::GetAsset | Rpc::ListAssets => &[Minter, Operator, Admin],
            Rpc::Revoke
            | Rpc::RevokeBatch
            | Rpc::ListRevocations
            | Rpc::RevocationStatus
            | Rpc::RotateKey
            | Rpc::ListKeys
            | Rpc::RetireKey
            | Rpc::AddForeignKey
            | Rpc::RemoveForeignKey
            | Rpc::ListForeignKeys
            | Rpc::PutAsset
            | Rpc::SetAssetState
            | Rpc::ListEdges
            | Rpc::ListAudit
            | Rpc::Purge => &[Operator, Admin],
            Rpc::Sync => &[Edge, Admin],
            Rpc::CreateApiKey | Rpc::ListApiKeys | Rpc::DeleteApiKey => &[Admin],
        }
    }

    /// Whether the call changes state (or opens the sync stream): a denied
    /// call of these is audited (`AUTH_DENIED`), not only logged.
    pub const fn writes(self) -> bool {
        matches!(
            self,
            Rpc::Mint
                | Rpc::MintBatch
                | Rpc::Revoke
                | Rpc::RotateKey
                | Rpc::RetireKey
                | Rpc::AddForeignKey
                | Rpc::RemoveForeignKey
                | Rpc::PutAsset
                | Rpc::SetAssetState
                | Rpc::Sync
                | Rpc::CreateApiKey
                | Rpc::DeleteApiKey
                | Rpc::Purge
        )
    }

    /// `Service.Method`, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::Mint => "LinkService.Mint",
            Rpc::MintBatch => "LinkService.MintBatch",
            Rpc::Revoke => "RevocationService.Revoke",
            Rpc::RevokeBatch => "RevocationService.RevokeBatch",
            Rpc::ListRevocations => "RevocationService.List",
            Rpc::RevocationStatus => "RevocationService.Status",
            Rpc::RotateKey => "KeyService.Rotate",
            Rpc::ListKeys => "KeyService.List",
            Rpc::RetireKey => "KeyService.Retire",
            Rpc::AddForeignKey => "KeyService.AddForeign",
            Rpc::RemoveForeignKey => "KeyService.RemoveForeign",
            Rpc::ListForeignKeys => "KeyService.ListForeign",
            Rpc::PutAsset => "AssetService.Put",
            Rpc::SetAssetState => "AssetService.SetState",
            Rpc::GetAsset => "AssetService.Get",
            Rpc::ListAssets => "AssetService.List",
            Rpc::ListEdges => "EdgeService.List",
            Rpc::Sync => "EdgeService.Sync",
            Rpc::ListAudit => "AuditService.List",
            Rpc::CreateApiKey => "ApiKeyService.Create",
            Rpc::ListApiKeys => "ApiKeyService.List",
            Rpc::DeleteApiKey => "ApiKeyService.Delete",
            Rpc::Purge => "PurgeService.Purge",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The API key's name: the actor in audit events and the change log.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Role edge: the edge ids (or patterns) its sync stream may announce.
    pub edge_ids: Vec<String>,
}

/// Prefix of generated API keys, so they are recognisable in secret scanners.
pub(crate) const KEY_PREFIX: &str = "stk_";

/// A fresh API key (`stk_` + 32 CSPRNG bytes in base64url) and its SHA-256.
pub fn generate_api_key() -> Result<(String, [u8; 32]), ApiError> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    random::fill(&mut bytes)?;
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_api_key(&key);
    Ok((key, hash))
}

/// SHA-256 of an API key string: what is stored and looked up.
pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The SHA-256 fingerprint of an API key, as logs and audit events show a key
/// nobody knows: `sha256:` and the first 16 hex digits of its hash. Not the key.
pub fn fingerprint(hash: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(&hash[..8]))
}

/// Why a call was refused, for logs and the metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DenyReason {
    Missing,
    Malformed,
    Unknown,
    WrongRole,
    Backoff,
}

impl DenyReason {
    const fn label(self) -> &'static str {
        match self {
            DenyReason::Missing => "missing",
            DenyReason::Malformed => "malformed",
            DenyReason::Unknown => "unknown",
            DenyReason::WrongRole => "wrong_role",
            DenyReason::Backoff => "backoff",
        }
    }
}

/// A refused authentication: why, who (key name or fingerprint), the error.
struct Refusal {
    reason: DenyReason,
    who: Option<String>,
    error: ApiError,
}

/// Checks the `authorization` metadata of each request against configured
/// and stored keys, then the RPC's role table; keeps the trail of denied calls.
#[derive(Clone, Debug)]
pub struct Authenticator {
    configured: Arc<HashMap<[u8; 32], Caller>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    guard: Arc<Mutex<AuthGuard>>,
}

impl Authenticator {
    /// Keys from the configuration (already validated) plus the store's.
    pub(crate) fn new(
        cfg: &AuthConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let configured = cfg
            .keys
            .iter()
            .filter_map(|k| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&k.sha256, &mut hash).ok()?;
                Some((hash, Caller { name: k.name.clone(), role: k.role, edge_ids: k.edge_ids.clone() }))
            })
            .collect();
        let guard = Arc::new(Mutex::new(AuthGuard::new(cfg)));
        Authenticator { configured: Arc::new(configured), store, clock, metrics, guard }
    }

    /// The configured keys, for listing.
    pub fn configured(&self) -> impl Iterator<Item = &Caller> {
        self.configured.values()
    }

    /// Authenticates the request and checks that its role may call `rpc`.
    /// A source backed off after repeated failures is refused first
    /// (`RESOURCE_EXHAUSTED`), without looking at its key.
    pub async fn check<T>(&self, req: &tonic::Request<T>, rpc: Rpc) -> Result<Caller, ApiError> {
        let remote = req.remote_addr();
        let ip = remote.map(|a| a.ip());
        let now_ms = self.clock.now_ms();
        let blocked = locks::lock(&self.guard).blocked(ip, now_ms);
        if let Some(secs) = blocked {
            self.metrics.auth_denied(DenyReason::Backoff.label());
            if let Some(suppressed) = locks::lock(&self.guard).refused_while_blocked(now_ms) {
                tracing::warn!(client = %addr(remote), method = rpc.name(), reason = "backoff", retry_secs = secs, suppressed, "auth.denied");
            }
            return Err(ApiError::TooManyFailures(format!(
                "too many failed authentications from this address; retry in {secs} s"
            )));
        }
        let refusal = match self.authenticate(req.metadata()).await {
            Ok(caller) if rpc.allowed().contains(&caller.role) => return Ok(caller),
            Ok(caller) => {
                let allowed = rpc.allowed().iter().map(|r| r.name()).collect::<Vec<_>>().join(" or ");
                let error = ApiError::PermissionDenied(format!(
                    "API key {:?} has role {}; {} needs role {allowed}",
                    caller.name,
                    caller.role,
                    rpc.name()
                ));
                Refusal { reason: DenyReason::WrongRole, who: Some(caller.name), error }
            }
            Err(Err(store)) => return Err(store),
            Err(Ok(refusal)) => refusal,
        };
        self.denied(rpc, remote, ip, now_ms, &refusal);
        Err(refusal.error)
    }

    /// Logs, counts, audits and backs off one denied call.
    fn denied(&self, rpc: Rpc, remote: Option<SocketAddr>, ip: Option<IpAddr>, now_ms: u64, r: &Refusal) {
        let reason = r.reason.label();
        self.metrics.auth_denied(reason);
        let denial = locks::lock(&self.guard).deny(ip, now_ms);
        let who = r.who.as_deref().unwrap_or("anonymous");
        if let Some(suppressed) = denial.log {
            tracing::warn!(client = %addr(remote), method = rpc.name(), key = %who, reason, suppressed, "auth.denied");
        }
        if denial.backoff_started {
            tracing::warn!(client = %addr(remote), method = rpc.name(), "auth.backoff_started");
        }
        if rpc.writes() && denial.audit {
            let detail = format!("{}: {reason} key, from {}", rpc.name(), addr(remote));
            let event = AuditEvent::new(
                self.clock.now_secs(),
                who,
                AuditAction::AuthDenied,
                format!("rpc:{}", rpc.name()),
                detail,
            );
            let store = Arc::clone(&self.store);
            tokio::spawn(async move {
                if let Err(e) = store.record_audit(vec![event]).await {
                    tracing::warn!(error = %e, "auth.audit_failed");
                }
            });
        }
    }

    /// The caller, or why not: `Err(Ok(refusal))` for credentials, `Err(Err(_))` for the store.
    async fn authenticate(&self, md: &tonic::metadata::MetadataMap) -> Result<Caller, Result<Refusal, ApiError>> {
        const MISSING: &str = "missing API key: send metadata `authorization: Bearer <api key>`";
        let refuse = |reason, who, m: String| Err(Ok(Refusal { reason, who, error: ApiError::Unauthenticated(m) }));
        if md.get_all("authorization").iter().nth(1).is_some() {
            // Components that pick different copies would disagree about the caller.
            return refuse(
                DenyReason::Malformed,
                None,
                "several authorization metadata entries; send exactly one".into(),
            );
        }
        let Some(value) = md.get("authorization") else {
            return refuse(DenyReason::Missing, None, MISSING.into());
        };
        let Ok(value) = value.to_str() else {
            return refuse(DenyReason::Malformed, None, "authorization metadata is not visible ASCII".into());
        };
        let key = match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => key.trim(),
            _ => return refuse(DenyReason::Malformed, None, format!("malformed authorization metadata; {MISSING}")),
        };
        let hash = hash_api_key(key);
        if let Some(caller) = self.configured.get(&hash) {
            return Ok(caller.clone());
        }
        match self.store.api_key(hash).await {
            Ok(Some(k)) => Ok(Caller { name: k.name, role: k.role, edge_ids: k.edge_ids }),
            Ok(None) => refuse(
                DenyReason::Unknown,
                Some(format!("unknown:{}", fingerprint(&hash))),
                "unknown or deleted API key".into(),
            ),
            Err(e) => Err(Err(e.into())),
        }
    }
}

/// A remote address for logs: `-` when the transport did not give one.
fn addr(remote: Option<SocketAddr>) -> String {
    remote.map_or_else(|| "-".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deny_reason_is_a_registered_metric_label() {
        use DenyReason::*;
        let labels: Vec<&str> = [Missing, Malformed, Unknown, WrongRole, Backoff].map(DenyReason::label).to_vec();
        assert_eq!(labels, crate::metrics::AUTH_DENIED_REASONS);
    }

    #[test]
    fn role_table() {
        use Role::*;
        let can = |role, rpc: Rpc| rpc.allowed().contains(&role);
        for rpc in [
            Rpc::Revoke,
            Rpc::RevokeBatch,
            Rpc::RotateKey,
            Rpc::RetireKey,
            Rpc::AddForeignKey,
            Rpc::RemoveForeignKey,
            Rpc::PutAsset,
            Rpc::SetAssetState,
            Rpc::Sync,
            Rpc::Purge,
        ] {
            assert!(!can(Minter, rpc), "minter must not call {}", rpc.name());
        }
        assert!(!can(Operator, Rpc::Mint) && !can(Operator, Rpc::MintBatch), "operator privileges never mint");
        let all = [
            Rpc::Mint,
            Rpc::MintBatch,
            Rpc::Revoke,
            Rpc::RevokeBatch,
            Rpc::ListRevocations,
            Rpc::RevocationStatus,
            Rpc::RotateKey,
            Rpc::ListKeys,
            Rpc::RetireKey,
            Rpc::AddForeignKey,
            Rpc::RemoveForeignKey,
            Rpc::ListForeignKeys,
            Rpc::PutAsset,
            Rpc::SetAssetState,
            Rpc::GetAsset,
            Rpc::ListAssets,
            Rpc::ListEdges,
            Rpc::Sync,
            Rpc::ListAudit,
            Rpc::CreateApiKey,
            Rpc::ListApiKeys,
            Rpc::DeleteApiKey,
            Rpc::Purge,
        ];
        assert!(can(Operator, Rpc::Purge) && Rpc::Purge.writes(), "purges are operator writes, audited when denied");
        for rpc in all {
            assert!(can(Admin, rpc));
            assert_eq!(can(Edge, rpc), rpc == Rpc::Sync, "edge may only sync: {}", rpc.name());
        }
    }

    #[test]
    fn generated_keys_are_distinct_and_hash_to_what_is_returned() {
        let (a, ha) = generate_api_key().unwrap();
        let (b, _) = generate_api_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 43);
        assert_eq!(hash_api_key(&a), ha);
    }
}
