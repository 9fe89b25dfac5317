//! The one place the control plane reads the OS random source: token ids,
//! signing key secrets and API keys (like `clock.rs` for time). Everything
//! else gets the values as arguments; minting, for one, is pure.
//! `clippy.toml` disallows the `OsRng` type elsewhere.

use stile_token::{TOKEN_ID_LEN, TokenId};

use crate::error::ApiError;

/// Fills `bytes` from the OS CSPRNG; INTERNAL if it fails.
pub(crate) fn fill(bytes: &mut [u8]) -> Result<(), ApiError> {
    use rand::TryRngCore;
    #[allow(clippy::disallowed_types)] // reason: this is the random module, the one allowed reader.
    use rand::rngs::OsRng;
    OsRng.try_fill_bytes(bytes).map_err(|e| ApiError::Internal(format!("OS random source failed: {e}")))
}

/// A fresh token id.
pub(crate) fn token_id() -> Result<TokenId, ApiError> {
    let mut bytes = [0u8; TOKEN_ID_LEN];
    fill(&mut bytes)?;
    Ok(TokenId(bytes))
}
