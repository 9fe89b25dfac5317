//! The mint audit buffer: while Redis is unreachable, mint audit events wait
//! in memory (bounded by `audit_buffer`) and are written, oldest first, once
//! Redis answers again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::Inner;
use crate::model::AuditEvent;
use crate::store::{Batch, StoreError};

/// Buffered audit events written per script call when Redis returns.
const FLUSH_BATCH: usize = 1_000;

impl Inner {
    pub(super) async fn record_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pending = self.pending_audit.lock().await;
        if pending.is_empty() && !self.down.load(Ordering::Acquire) {
            match self.write_audit(&events).await {
                Ok(()) => return Ok(()),
                Err(StoreError::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        } else if !pending.is_empty() && !self.down.load(Ordering::Acquire) {
            // Redis is back and nobody flushed yet: older events first.
            if self.flush_locked(&mut pending).await.is_ok() {
                match self.write_audit(&events).await {
                    Ok(()) => return Ok(()),
                    Err(StoreError::Unavailable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if pending.len() + events.len() > self.settings.audit_buffer {
            return Err(StoreError::Unavailable(format!(
                "Redis is unreachable and {} mint audit events are already buffered (store.redis.audit_buffer)",
                pending.len()
            )));
        }
        pending.extend(events);
        self.has_pending.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes buffered audit events, oldest first, if there are any.
    pub(super) async fn flush_audit(&self) -> Result<(), StoreError> {
        if !self.has_pending.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut pending = self.pending_audit.lock().await;
        self.flush_locked(&mut pending).await
    }

    async fn flush_locked(&self, pending: &mut VecDeque<AuditEvent>) -> Result<(), StoreError> {
        let total = pending.len();
        while !pending.is_empty() {
            let n = pending.len().min(FLUSH_BATCH);
            let batch: Vec<AuditEvent> = pending.iter().take(n).cloned().collect();
            self.write_audit(&batch).await?;
            pending.drain(..n);
        }
        self.has_pending.store(false, Ordering::Release);
        if total > 0 {
            tracing::info!(events = total, "redis.audit_flushed");
        }
        Ok(())
    }

    async fn write_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.commit(Batch { writes: Vec::new(), audit: events.to_vec() }).await.map(|_| ())
    }
}
