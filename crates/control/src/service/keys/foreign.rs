//! Foreign keys: other vendors' signing keys (Akamai, Google Cloud CDN and
//! Media CDN, Bunny, nginx `secure_link`) that the edges verify those
//! vendors' links with where a `[[foreign]]` entry accepts the format
//! (`docs/migration.md`, "Foreign keys").
//!
//! They travel as Stile's own keys do: stored with their material, one
//! change log entry per addition or removal (never the material), pushed to
//! every edge by the sync stream (the material in the snapshot and in the
//! delta of an addition). The material is checked here with the decoding the
//! edge uses (`stile_foreign::Key::parse_as`), so a key the control plane
//! stored is one every edge can load; it is never logged, listed or audited.

use stile_foreign::{Format, Key};

use super::KeyRollout;
use crate::error::ApiError;
use crate::model::{AuditAction, AuditEvent, ChangeKind, ForeignKey, MAX_FOREIGN_KEYS};
use crate::store::{Batch, Write};

/// Longest key text accepted, in bytes (a 256-byte secret in hex is 512).
pub(crate) const MAX_KEY_TEXT: usize = 1024;

impl KeyRollout {
    /// Checks and adds a foreign key, pushing it to the edges; returns it as
    /// stored and the version of its change.
    pub(crate) async fn add_foreign(
        &self,
        actor: &str,
        format: &str,
        name: &str,
        key: &str,
        reason: &str,
    ) -> Result<(ForeignKey, u64), ApiError> {
        let format = format_named(format)?;
        if key.len() > MAX_KEY_TEXT {
            return Err(ApiError::InvalidArgument(format!(
                "{format} key {name:?}: the key text is {} bytes, at most {MAX_KEY_TEXT}",
                key.len()
            )));
        }
        // The error names the key (never its material) and what is wrong with it.
        Key::parse_as(format, name, key).map_err(|e| ApiError::InvalidArgument(format!("{format} key: {e}")))?;
        let _guard = self.key_lock.lock().await;
        let held = self.store.foreign_keys().await?;
        let of_format = held.iter().filter(|k| k.format == format.as_str()).collect::<Vec<_>>();
        if of_format.iter().any(|k| k.name == name) {
            return Err(ApiError::AlreadyExists(format!(
                "{format} key {name:?} exists; remove it first (stile keys rm-foreign)"
            )));
        }
        if of_format.len() >= MAX_FOREIGN_KEYS {
            return Err(ApiError::FailedPrecondition(format!(
                "{format} holds {MAX_FOREIGN_KEYS} keys already, as many as an edge holds; remove one first"
            )));
        }
        let now = self.clock.now_secs();
        let stored = ForeignKey {
            format: format.as_str().to_owned(),
            name: name.to_owned(),
            key: key.trim().to_owned(),
            created_at: now,
            created_by: actor.to_owned(),
        };
        let change =
            ChangeKind::ForeignKey { format: stored.format.clone(), name: stored.name.clone(), removed: false };
        let version = self.commit_foreign(actor, Write::PutForeignKey(stored.clone()), change, reason).await?;
        tracing::info!(caller = %actor, foreign.format = %format, foreign.name = %name, version, "keys.add_foreign");
        Ok((stored, version))
    }

    /// Removes a foreign key from the store and the edges; returns the
    /// version of its change.
    pub(crate) async fn remove_foreign(
        &self,
        actor: &str,
        format: &str,
        name: &str,
        reason: &str,
    ) -> Result<u64, ApiError> {
        let format = format_named(format)?;
        let _guard = self.key_lock.lock().await;
        let held = self.store.foreign_keys().await?;
        if !held.iter().any(|k| k.format == format.as_str() && k.name == name) {
            return Err(ApiError::NotFound(format!("{format} key {name:?} does not exist (stile keys ls-foreign)")));
        }
        let write = Write::DeleteForeignKey { format: format.as_str().to_owned(), name: name.to_owned() };
        let change =
            ChangeKind::ForeignKey { format: format.as_str().to_owned(), name: name.to_owned(), removed: true };
        let version = self.commit_foreign(actor, write, change, reason).await?;
        tracing::info!(caller = %actor, foreign.format = %format, foreign.name = %name, version, "keys.remove_foreign");
        Ok(version)
    }

    /// One commit: the write, its change and its audit event (format and
    /// name, never the material).
    async fn commit_foreign(
        &self,
        actor: &str,
        write: Write,
        change: ChangeKind,
        reason: &str,
    ) -> Result<u64, ApiError> {
        let ChangeKind::ForeignKey { format, name, removed } = &change else {
            return Err(ApiError::Internal("a foreign key commit without a foreign key change".into()));
        };
        let action = if *removed { AuditAction::ForeignKeyRemove } else { AuditAction::ForeignKeyAdd };
        let now = self.clock.now_secs();
        let audit = vec![AuditEvent::new(now, actor, action, format!("foreign:{format}/{name}"), reason.to_owned())];
        let writes = vec![write, Write::Append { at: now, actor: actor.to_owned(), kind: change }];
        let committed = self.store.commit(Batch { writes, audit }).await?;
        committed
            .changes
            .last()
            .map(|c| c.version)
            .ok_or_else(|| ApiError::Internal("store did not return the foreign key change".into()))
    }
}

/// The format of a name, or the list of names.
fn format_named(name: &str) -> Result<Format, ApiError> {
    Format::from_name(name).ok_or_else(|| {
        let names = Format::ALL.map(Format::as_str).join(", ");
        ApiError::InvalidArgument(format!("unknown foreign format {name:?}; one of {names}"))
    })
}
