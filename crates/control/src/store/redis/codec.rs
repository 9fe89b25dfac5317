//! How values are stored: JSON bodies, with a change's version and an audit
//! event's seq taken from their stream entry ids (`<n>-0`).

use redis::streams::StreamId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{AuditEvent, Change, ChangeKind, ForeignKey, Purge, Revocation, SigningKey};
use crate::store::StoreError;

/// The number in a `<n>-0` stream entry id (a version or an audit seq).
pub(super) fn entry_number(table: &'static str, e: &StreamId) -> Result<u64, StoreError> {
    e.id.split_once('-')
        .and_then(|(n, _)| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt { table, message: format!("stream entry id {:?} is not <number>-0", e.id) })
}

fn field(table: &'static str, e: &StreamId, name: &str) -> Result<Vec<u8>, StoreError> {
    e.get::<Vec<u8>>(name)
        .ok_or_else(|| StoreError::Corrupt { table, message: format!("entry {} has no field {name:?}", e.id) })
}

pub(super) fn change(e: &StreamId) -> Result<Change, StoreError> {
    let version = entry_number("log", e)?;
    let mut change: Change = decode("log", &field("log", e, "change")?)?;
    change.version = version;
    set_version(&mut change.kind, version);
    Ok(change)
}

/// Writes a change's version into the revocation or purge it carries (stored
/// without it: the stream entry id is the version).
pub(super) fn set_version(kind: &mut ChangeKind, version: u64) {
    match kind {
        ChangeKind::Revocation(r) => r.version = version,
        ChangeKind::Purge(p) => p.version = version,
        ChangeKind::Key { .. } | ChangeKind::ForeignKey { .. } => {}
    }
}

pub(super) fn purge(version: u64, json: &[u8]) -> Result<Purge, StoreError> {
    let mut p: Purge = decode("purges", json)?;
    p.version = version;
    Ok(p)
}

pub(super) fn revocation(version: u64, json: &[u8]) -> Result<Revocation, StoreError> {
    let mut r: Revocation = decode("revocations", json)?;
    r.version = version;
    Ok(r)
}

pub(super) fn audit_event(e: &StreamId) -> Result<AuditEvent, StoreError> {
    let mut event: AuditEvent = decode("audit", &field("audit", e, "event")?)?;
    event.seq = entry_number("audit", e)?;
    Ok(event)
}

pub(super) fn signing_keys(values: &[Vec<u8>]) -> Result<Vec<SigningKey>, StoreError> {
    let mut keys = values.iter().map(|v| decode("signing_keys", v)).collect::<Result<Vec<SigningKey>, _>>()?;
    keys.sort_by_key(|k| k.id);
    Ok(keys)
}

pub(super) fn foreign_keys(values: &[Vec<u8>]) -> Result<Vec<ForeignKey>, StoreError> {
    let mut keys = values.iter().map(|v| decode("foreign_keys", v)).collect::<Result<Vec<ForeignKey>, _>>()?;
    keys.sort_by(|a, b| (&a.format, &a.name).cmp(&(&b.format, &b.name)));
    Ok(keys)
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Backend(format!("encoding: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { table, message: e.to_string() })
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt { table: "redis", message: format!("unexpected {what}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_are_versions() {
        let e = StreamId { id: "42-0".into(), ..StreamId::default() };
        assert_eq!(entry_number("log", &e).unwrap(), 42);
        let bad = StreamId { id: "x".into(), ..StreamId::default() };
        assert!(matches!(entry_number("log", &bad), Err(StoreError::Corrupt { .. })));
    }
}
