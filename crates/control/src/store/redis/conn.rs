//! Talking to Redis: every call has a deadline, every error is sorted into
//! "unavailable, retry later" or a real failure, and every answer (or its
//! absence) updates whether Redis is known to be down.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{RedisError, RedisResult, ServerErrorKind};
use tokio::time::Instant;

use super::Inner;
use crate::locks;
use crate::store::StoreError;

impl Inner {
    /// Runs one command on the read connection.
    pub(super) async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.link.load().conn.clone();
        self.observe(within(self.settings.read_timeout, cmd.query_async(&mut c)).await)
    }

    /// Runs a pipeline (usually `MULTI`/`EXEC`) on the read connection.
    pub(super) async fn read_pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut c = self.link.load().conn.clone();
        self.observe(within(self.settings.read_timeout, pipe.query_async(&mut c)).await)
    }

    /// Tracks whether Redis answers: every result passes through here.
    pub(super) fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.mark_up(),
            Err(StoreError::Unavailable(e)) => self.mark_down(e),
            Err(_) => {}
        }
        result
    }

    pub(super) fn mark_down(&self, error: &str) {
        // With Sentinel, the primary may have moved: look it up again.
        self.follow.notify_one();
        if !self.down.swap(true, Ordering::AcqRel) {
            *locks::lock(&self.down_since) = Some(Instant::now());
            let server = self.link.load().addr.clone();
            tracing::warn!(url = %self.settings.redacted_url, server, error, "redis.unavailable");
        }
    }

    pub(super) fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            let since = locks::lock(&self.down_since).take();
            let down_ms = since.map_or(0, |t| t.elapsed().as_millis());
            let server = self.link.load().addr.clone();
            tracing::info!(url = %self.settings.redacted_url, server, down_ms, "redis.recovered");
        }
    }
}

/// Awaits a Redis call with a deadline and sorts its error.
pub(super) async fn within<T>(deadline: Duration, call: impl Future<Output = RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e)),
        Err(_) => Err(StoreError::Unavailable(format!("no answer from Redis within {} ms", deadline.as_millis()))),
    }
}

/// Connection trouble and the refusals a healthy deployment recovers from
/// (loading, failover, out of memory, too few replicas) are
/// [`StoreError::Unavailable`]; anything else is a bug or a misconfiguration.
fn classify(e: &RedisError) -> StoreError {
    let transient_server = matches!(
        e.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    );
    let transient_code = matches!(e.code(), Some("OOM" | "MISCONF" | "NOREPLICAS" | "BUSY" | "LOADING"));
    if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || transient_server
        || transient_code
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(format!("redis: {e}"))
    }
}

/// `(major, minor)` from `INFO server`.
pub(super) fn server_version(info: &str) -> (u32, u32) {
    let v = info.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("0.0").trim();
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_version() {
        assert_eq!(server_version("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n"), (7, 0));
        assert_eq!(server_version("nothing"), (0, 0));
    }
}
