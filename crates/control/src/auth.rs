//! Authentication and authorisation: bearer API keys, stored as SHA-256
//! hashes, each with one [`Role`]; [`Rpc::allowed`] is the single table of who
//! may call what.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::ConfiguredKey;
use crate::error::ApiError;
pub use crate::model::Role;
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
            | Rpc::ListRevocations
            | Rpc::RevocationStatus
            | Rpc::RotateKey
            | Rpc::ListKeys
            | Rpc::RetireKey
            | Rpc::PutAsset
            | Rpc::SetAssetState
            | Rpc::ListEdges
            | Rpc::ListAudit => &[Operator, Admin],
            Rpc::Sync => &[Edge, Admin],
            Rpc::CreateApiKey | Rpc::ListApiKeys | Rpc::DeleteApiKey => &[Admin],
        }
    }

    /// `Service.Method`, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::Mint => "LinkService.Mint",
            Rpc::MintBatch => "LinkService.MintBatch",
            Rpc::Revoke => "RevocationService.Revoke",
            Rpc::ListRevocations => "RevocationService.List",
            Rpc::RevocationStatus => "RevocationService.Status",
            Rpc::RotateKey => "KeyService.Rotate",
            Rpc::ListKeys => "KeyService.List",
            Rpc::RetireKey => "KeyService.Retire",
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
}

/// Prefix of generated API keys, so they are recognisable in secret scanners.
pub const KEY_PREFIX: &str = "stk_";

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

/// Checks the `authorization` metadata of each request against configured
/// and stored keys, then the RPC's role table.
#[derive(Clone, Debug)]
pub struct Authenticator {
    configured: Arc<HashMap<[u8; 32], Caller>>,
    store: Arc<dyn Store>,
}

impl Authenticator {
    /// Keys from the configuration (already validated) plus the store's.
    pub fn new(keys: &[ConfiguredKey], store: Arc<dyn Store>) -> Authenticator {
        let configured = keys
            .iter()
            .filter_map(|k| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&k.sha256, &mut hash).ok()?;
                Some((hash, Caller { name: k.name.clone(), role: k.role }))
            })
            .collect();
        Authenticator { configured: Arc::new(configured), store }
    }

    /// The configured keys, for listing.
    pub fn configured(&self) -> impl Iterator<Item = &Caller> {
        self.configured.values()
    }

    /// Authenticates the request and checks that its role may call `rpc`.
    pub async fn check<T>(&self, req: &tonic::Request<T>, rpc: Rpc) -> Result<Caller, ApiError> {
        let caller = self.authenticate(req.metadata()).await?;
        if !rpc.allowed().contains(&caller.role) {
            let allowed = rpc.allowed().iter().map(|r| r.name()).collect::<Vec<_>>().join(" or ");
            tracing::info!(rpc = rpc.name(), caller = %caller.name, role = %caller.role, "auth.denied");
            return Err(ApiError::PermissionDenied(format!(
                "API key {:?} has role {}; {} needs role {allowed}",
                caller.name,
                caller.role,
                rpc.name()
            )));
        }
        Ok(caller)
    }

    async fn authenticate(&self, md: &tonic::metadata::MetadataMap) -> Result<Caller, ApiError> {
        const MISSING: &str = "missing API key: send metadata `authorization: Bearer <api key>`";
        if md.get_all("authorization").iter().nth(1).is_some() {
            // Components that pick different copies would disagree about the caller.
            return Err(ApiError::Unauthenticated("several authorization metadata entries; send exactly one".into()));
        }
        let value = md.get("authorization").ok_or_else(|| ApiError::Unauthenticated(MISSING.into()))?;
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("authorization metadata is not visible ASCII".into()))?;
        let key = match value.split_once(' ') {
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() => key.trim(),
            _ => return Err(ApiError::Unauthenticated(format!("malformed authorization metadata; {MISSING}"))),
        };
        let hash = hash_api_key(key);
        if let Some(caller) = self.configured.get(&hash) {
            return Ok(caller.clone());
        }
        match self.store.api_key(hash).await? {
            Some(k) => Ok(Caller { name: k.name, role: k.role }),
            None => Err(ApiError::Unauthenticated("unknown or deleted API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        use Role::*;
        let can = |role, rpc: Rpc| rpc.allowed().contains(&role);
        for rpc in [Rpc::Revoke, Rpc::RotateKey, Rpc::RetireKey, Rpc::PutAsset, Rpc::SetAssetState, Rpc::Sync] {
            assert!(!can(Minter, rpc), "minter must not call {}", rpc.name());
        }
        assert!(!can(Operator, Rpc::Mint) && !can(Operator, Rpc::MintBatch), "operator privileges never mint");
        let all = [
            Rpc::Mint,
            Rpc::MintBatch,
            Rpc::Revoke,
            Rpc::ListRevocations,
            Rpc::RevocationStatus,
            Rpc::RotateKey,
            Rpc::ListKeys,
            Rpc::RetireKey,
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
        ];
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
