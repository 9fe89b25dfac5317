//! `[cache]`: the edge's object cache (`docs/edge.md`, "Cache", mirrors every field).

use std::path::PathBuf;

use serde::Deserialize;

/// The `[cache]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache admitted objects (off: every admitted request goes to the origin).
    pub enabled: bool,
    /// Memory tier budget, bytes (bodies and headers of the objects held in memory).
    pub memory_bytes: u64,
    /// Largest object kept in the memory tier, bytes; larger ones live on disk only
    /// (or, without a disk tier, are not cached).
    pub memory_max_object_bytes: u64,
    /// Directory of the disk tier. Empty: memory only. Survives restarts.
    pub disk_path: PathBuf,
    /// Disk tier budget, bytes (files' sizes; evicted least recently used first).
    pub disk_bytes: u64,
    /// Largest object cached at all, bytes (without a disk tier, at most
    /// `memory_max_object_bytes`); larger responses are proxied uncached (and the
    /// key is remembered, so later requests pass `Range` to the origin).
    pub max_object_bytes: u64,
    /// Query parameters that select content and so belong to the cache key (all
    /// others, and the token, never do). Names are matched exactly.
    pub key_query_params: Vec<String>,
    /// A fill older than this lets waiting requests compete to fetch again, milliseconds.
    /// Must outlast the slowest origin answer, LL-HLS blocking playlist reloads included.
    pub lock_timeout_ms: u64,
    /// Longest a request waits for another request's fill before going to the origin
    /// itself (uncached), milliseconds.
    pub lock_wait_timeout_ms: u64,
    /// Stale-while-revalidate window when the origin sends none, seconds: a stale
    /// object is served while one background fetch refreshes it.
    pub stale_while_revalidate_secs: u32,
    /// Stale-if-error window when the origin sends none, seconds: a stale object is
    /// served when the origin fails (connect error, timeout, 5xx).
    pub stale_if_error_secs: u32,
    /// Freshness when the origin sends no `Cache-Control` max-age/s-maxage and no `Expires`.
    pub ttl: TtlConfig,
}

impl Default for CacheConfig {
    fn default() -> CacheConfig {
        CacheConfig {
            enabled: false,
            memory_bytes: 256 << 20,
            memory_max_object_bytes: 8 << 20,
            disk_path: PathBuf::new(),
            disk_bytes: 10 << 30,
            max_object_bytes: 64 << 20,
            key_query_params: vec!["_HLS_msn".into(), "_HLS_part".into(), "_HLS_skip".into()],
            lock_timeout_ms: 30_000,
            lock_wait_timeout_ms: 30_000,
            stale_while_revalidate_secs: 2,
            stale_if_error_secs: 86_400,
            ttl: TtlConfig::default(),
        }
    }
}

/// `[cache.ttl]`: default freshness per object kind and per status, seconds
/// (0: not cached unless the origin gives a freshness lifetime).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    /// HLS multivariant (master) playlists.
    pub multivariant_playlist_secs: u32,
    /// HLS media playlists of finished streams (`#EXT-X-ENDLIST` or `PLAYLIST-TYPE:VOD`).
    pub vod_playlist_secs: u32,
    /// Live HLS media playlists: half the `#EXT-X-TARGETDURATION`, capped at this.
    pub live_playlist_max_secs: u32,
    /// Low-latency HLS playlists (`#EXT-X-PART-INF`, or a request with `_HLS_msn`).
    pub ll_hls_playlist_secs: u32,
    /// Static DASH MPDs (`type="static"`).
    pub static_mpd_secs: u32,
    /// Dynamic (live) DASH MPDs.
    pub dynamic_mpd_secs: u32,
    /// Init segments (a file name containing `init`).
    pub init_segment_secs: u32,
    /// Media segments (`.ts`, `.m4s`, `.mp4`, `.aac`, `.vtt`, …).
    pub segment_secs: u32,
    /// Anything else.
    pub other_secs: u32,
    /// `404` and `410` answers (negative caching).
    pub not_found_secs: u32,
    /// Other error answers (`4xx` but 404/410, `5xx`).
    pub error_secs: u32,
}

impl Default for TtlConfig {
    fn default() -> TtlConfig {
        TtlConfig {
            multivariant_playlist_secs: 10,
            vod_playlist_secs: 60,
            live_playlist_max_secs: 6,
            ll_hls_playlist_secs: 1,
            static_mpd_secs: 60,
            dynamic_mpd_secs: 2,
            init_segment_secs: 86_400,
            segment_secs: 86_400,
            other_secs: 0,
            not_found_secs: 2,
            error_secs: 0,
        }
    }
}

/// Longest a query parameter name in `key_query_params` may be.
const MAX_PARAM_NAME: usize = 64;

impl CacheConfig {
    /// Checks the table; the first problem as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.memory_bytes < 1 << 20 {
            return Err(("cache.memory_bytes", "at least 1 MiB".into()));
        }
        if self.memory_max_object_bytes == 0 || self.memory_max_object_bytes > self.memory_bytes {
            return Err(("cache.memory_max_object_bytes", "must be between 1 and cache.memory_bytes".into()));
        }
        if self.max_object_bytes == 0 {
            return Err(("cache.max_object_bytes", "must be greater than zero".into()));
        }
        if self.max_object_bytes > u64::from(u32::MAX) {
            return Err(("cache.max_object_bytes", "at most 4 GiB".into()));
        }
        let disk = !self.disk_path.as_os_str().is_empty();
        if disk {
            if self.disk_bytes < self.max_object_bytes {
                return Err(("cache.disk_bytes", "must be at least cache.max_object_bytes".into()));
            }
            if self.disk_path.is_relative() {
                return Err(("cache.disk_path", "must be an absolute path".into()));
            }
        }
        for p in &self.key_query_params {
            let ok = !p.is_empty()
                && p.len() <= MAX_PARAM_NAME
                && p.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#' | b'?' | b'%'));
            if !ok {
                return Err(("cache.key_query_params", format!("{p:?} is not a plain query parameter name")));
            }
        }
        for (field, v) in
            [("cache.lock_timeout_ms", self.lock_timeout_ms), ("cache.lock_wait_timeout_ms", self.lock_wait_timeout_ms)]
        {
            if v == 0 {
                return Err((field, "must be greater than zero".into()));
            }
        }
        Ok(())
    }

    /// The largest object cached: `max_object_bytes`, within the memory tier's limit without a disk tier.
    pub(crate) fn effective_max_object(&self) -> u64 {
        if self.disk().is_some() {
            self.max_object_bytes
        } else {
            self.max_object_bytes.min(self.memory_max_object_bytes)
        }
    }

    /// The disk tier's directory, when there is one.
    pub fn disk(&self) -> Option<&std::path::Path> {
        (!self.disk_path.as_os_str().is_empty()).then_some(self.disk_path.as_path())
    }
}
