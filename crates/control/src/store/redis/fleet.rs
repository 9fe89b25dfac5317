//! Replica coordination through Redis ([`ReplicaBus`]): each replica's view
//! of its connected edges under `{p}:fleet:<replica>` with a TTL, the set of
//! replicas that published one, and the log tail's newest version.

use tokio::sync::watch;

use super::RedisStore;
use crate::store::{ReplicaBus, StoreFuture};

impl ReplicaBus for RedisStore {
    fn watch_versions(&self) -> watch::Receiver<u64> {
        self.inner.versions.subscribe()
    }

    fn publish_fleet(&self, replica: String, view: String, ttl_ms: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(format!("{}{replica}", inner.keys.fleet))
                .arg(view)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .ignore();
            pipe.cmd("SADD").arg(&inner.keys.fleet_replicas).arg(&replica).ignore();
            inner.read_pipe::<()>(&pipe).await
        })
    }

    fn fleet_views(&self) -> StoreFuture<'_, Vec<(String, String)>> {
        Box::pin(async move {
            let inner = &self.inner;
            let replicas: Vec<String> = inner.read(redis::cmd("SMEMBERS").arg(&inner.keys.fleet_replicas)).await?;
            if replicas.is_empty() {
                return Ok(Vec::new());
            }
            let mut mget = redis::cmd("MGET");
            for r in &replicas {
                mget.arg(format!("{}{r}", inner.keys.fleet));
            }
            let views: Vec<Option<String>> = inner.read(&mget).await?;
            let mut out = Vec::new();
            let mut gone = redis::cmd("SREM");
            gone.arg(&inner.keys.fleet_replicas);
            let mut any_gone = false;
            for (replica, view) in replicas.into_iter().zip(views) {
                match view {
                    Some(v) => out.push((replica, v)),
                    None => {
                        gone.arg(replica);
                        any_gone = true;
                    }
                }
            }
            if any_gone {
                // Expired views: forget their replicas (a replica that publishes again re-adds itself).
                inner.read::<()>(&gone).await?;
            }
            Ok(out)
        })
    }
}
