//! The log tail: one task per store, on a connection of its own, follows
//! `{p}:log` with `XREAD BLOCK` and publishes the newest version any replica
//! committed ([`crate::store::ReplicaBus::watch_versions`]); it also notices
//! Redis coming back, and then flushes the buffered mint audit events.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::streams::StreamReadReply;

use super::Inner;
use super::codec::entry_number;
use super::conn::within;
use crate::store::StoreError;
use crate::store::notify::raise;

/// How long one `XREAD BLOCK` of the log tail waits, milliseconds.
const TAIL_BLOCK_MS: u64 = 1_000;
/// Log entries the tail reads at a time.
const TAIL_BATCH: usize = 1_000;
/// Longest pause between two reconnection attempts of the tail.
const TAIL_MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Inner {
    /// Raises the published version (never lowers it).
    pub(super) fn publish(&self, version: u64) {
        raise(&self.versions, version);
    }
}

/// Tails the log on a connection of its own and publishes the newest version
/// seen; reconnects with backoff; flushes buffered audit events once Redis
/// answers again; moves with the store's link (Sentinel failover). Runs until
/// the store is dropped.
pub(super) async fn tail(inner: Arc<Inner>, mut last: u64) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(inner.settings.connect_timeout))
        .set_response_timeout(None);
    let block = Duration::from_millis(TAIL_BLOCK_MS);
    let mut backoff = Duration::from_millis(50);
    loop {
        let link = inner.link.load_full();
        let mut conn = match within(
            inner.settings.read_timeout,
            link.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                if let StoreError::Unavailable(m) = &e {
                    inner.mark_down(m);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(TAIL_MAX_BACKOFF);
                continue;
            }
        };
        loop {
            // A counter below what was seen means Redis lost data or was
            // restored from an older backup: follow it from there (sync
            // sessions learn it from `log_since`).
            let current: Result<Option<u64>, _> =
                within(inner.settings.read_timeout, redis::cmd("GET").arg(&inner.keys.version).query_async(&mut conn))
                    .await;
            match current {
                Ok(v) => {
                    let v = v.unwrap_or(0);
                    if v < last {
                        tracing::error!(
                            seen = last,
                            current = v,
                            "redis.log_went_back: Redis lost acknowledged changes"
                        );
                        last = v;
                    }
                    inner.publish(v);
                }
                Err(e) => {
                    match &e {
                        StoreError::Unavailable(m) => inner.mark_down(m),
                        other => tracing::warn!(error = %other, "redis.tail_failed"),
                    }
                    break;
                }
            }
            inner.mark_up();
            if let Err(e) = inner.flush_audit().await {
                tracing::debug!(error = %e, "redis.audit_flush_failed");
            }
            let read = within(
                block + inner.settings.read_timeout,
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(TAIL_BATCH)
                    .arg("BLOCK")
                    .arg(TAIL_BLOCK_MS)
                    .arg("STREAMS")
                    .arg(&inner.keys.log)
                    .arg(format!("{last}-0"))
                    .query_async::<Option<StreamReadReply>>(&mut conn),
            )
            .await;
            match read {
                Ok(Some(reply)) => {
                    for e in reply.keys.iter().flat_map(|k| &k.ids) {
                        if let Ok(v) = entry_number("log", e) {
                            last = last.max(v);
                        }
                    }
                    inner.publish(last);
                }
                Ok(None) => {}
                Err(e) => {
                    match &e {
                        StoreError::Unavailable(m) => inner.mark_down(m),
                        other => tracing::warn!(error = %other, "redis.tail_failed"),
                    }
                    break;
                }
            }
            backoff = Duration::from_millis(50);
            if !Arc::ptr_eq(&link, &inner.link.load()) {
                break; // The store moved to another primary: follow it.
            }
        }
        // The connection failed (or Redis refused the tail's commands): back off.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(TAIL_MAX_BACKOFF);
    }
}
