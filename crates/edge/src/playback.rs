//! Per-share playback outcomes (`docs/sessions.md`, "Outcomes"): what the edge
//! sees of each playback session, with no player cooperation, counted per share
//! channel.
//!
//! Two bounded tables, both fixed in size at start (`[outcomes]`):
//!
//! - [`Tracker`]: one entry per playback session this edge has seen, keyed by
//!   the session id — its channel, start, last request, hard maximum and, for
//!   VOD, the furthest media position reached. At most `outcomes.max_sessions`
//!   entries: when full, new sessions are still served but not tracked
//!   (`stile_edge_playback_untracked_total`), so a flood of sessions never grows
//!   the edge's memory. A session ends once — idle (found by [`Tracker::sweep`]),
//!   or `expired`, `revoked`, `max` when a request carrying it is denied for that
//!   reason — which counts it by cause, observes its completion, and logs one
//!   `session.ended` event (session id, channel, cause, duration, completion;
//!   never a credential).
//! - [`Segments`]: where each segment of a VOD presentation ends (an HLS media
//!   playlist with `#EXT-X-ENDLIST`, or a static DASH MPD: [`crate::mpd_positions`]),
//!   and its total duration, keyed by a hash of the segment's canonical path.
//!   The edge fills it when it reads a VOD playlist or MPD it serves under a
//!   session; a segment request admitted under a session looks its path up and
//!   advances the session's furthest position. Direct-mapped, `outcomes.max_segments`
//!   slots: a colliding segment replaces the older one (that segment then
//!   advances nothing, which only under-counts completion).
//!
//! The per-request work is a shard lock and a hash-table lookup for the session
//! (and, for segments, a hash of the path and one slot lock): no allocation.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use stile_token::{Reason, SessionId};

use crate::clock::SharedClock;
pub use crate::metrics::EndCause;
use crate::metrics::{Channel, Metrics};
use crate::mpd_positions::to_ms;
use crate::playlist::{remove_dot_segments, uri_path};

/// Shards of the session table (each its own lock).
const SHARDS: usize = 16;

/// What the tracker needs of a session to start tracking it.
#[derive(Clone, Copy, Debug)]
pub struct Started<'a> {
    /// The session id.
    pub id: SessionId,
    /// The link's share channel (MAC-verified).
    pub channel: Option<&'a str>,
    /// When the session started (its `started_at`), Unix seconds.
    pub started_at: u64,
    /// Its policy's idle timeout.
    pub idle_secs: u32,
    /// When its hard maximum ends it.
    pub max_at: u64,
}

/// A position reached in a VOD presentation: a segment's end and the total, milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Where the segment ends.
    pub end_ms: u32,
    /// The playlist's total duration.
    pub total_ms: u32,
}

#[derive(Debug)]
struct Entry {
    channel: Channel,
    started_at: u64,
    last_seen: u64,
    idle_secs: u32,
    max_at: u64,
    furthest: Position,
}

/// The playback sessions this edge has seen (bounded; see the module docs).
#[derive(Debug)]
pub struct Tracker {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    per_shard: usize,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracker {
    /// A tracker holding at most `max_sessions` sessions (rounded up to a multiple of
    /// the shard count), all memory reserved now.
    pub fn new(max_sessions: usize, metrics: Arc<Metrics>) -> Tracker {
        let per_shard = max_sessions.div_ceil(SHARDS);
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::with_capacity(per_shard))).collect();
        Tracker { shards, per_shard, metrics }
    }

    /// Most sessions tracked at once.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    fn shard(&self, id: SessionId) -> &Mutex<HashMap<u64, Entry>> {
        // Session ids are random: their low bits spread evenly.
        &self.shards[(id.0 as usize) % SHARDS]
    }

    /// Inserts `s` unless its shard is full (then counts it untracked); `false` when untracked.
    fn insert(&self, s: &Started<'_>, now: u64) -> bool {
        let mut shard = lock(self.shard(s.id));
        if shard.contains_key(&s.id.0) {
            return true;
        }
        if shard.len() >= self.per_shard {
            drop(shard);
            self.metrics.playback_untracked();
            return false;
        }
        let entry = Entry {
            channel: self.metrics.channel(s.channel),
            started_at: s.started_at,
            last_seen: now,
            idle_secs: s.idle_secs,
            max_at: s.max_at,
            furthest: Position::default(),
        };
        shard.insert(s.id.0, entry);
        drop(shard);
        self.metrics.playback_tracked(1);
        true
    }

    /// A session this edge started: counted as a start on its channel, and tracked.
    pub fn start(&self, s: &Started<'_>, now: u64) {
        self.metrics.channel(s.channel).playback(&self.metrics).starts.inc();
        self.insert(s, now);
    }

    /// A session credential renewed (written again) for a request of `s`.
    pub fn renewed(&self, s: &Started<'_>) {
        let shard = lock(self.shard(s.id));
        match shard.get(&s.id.0) {
            Some(e) => e.channel.playback(&self.metrics).renewals.inc(),
            None => {
                drop(shard);
                self.metrics.channel(s.channel).playback(&self.metrics).renewals.inc();
            }
        }
    }

    /// A request admitted under session `s` at `now`, reaching `position` (a VOD
    /// segment's end) if known. A session this edge has not seen (started on another
    /// edge, or ended here as idle and resumed) is tracked from now on, without a start.
    pub fn seen(&self, s: &Started<'_>, now: u64, position: Option<Position>) {
        {
            let mut shard = lock(self.shard(s.id));
            if let Some(e) = shard.get_mut(&s.id.0) {
                e.last_seen = e.last_seen.max(now);
                if let Some(p) = position {
                    advance(&mut e.furthest, p);
                }
                return;
            }
        }
        if self.insert(s, now) && position.is_some() {
            self.seen(s, now, position);
        }
    }

    /// A request carrying session `id` denied for `reason`: ends it when the reason
    /// does (`session_expired`, `revoked`, `session_max`) and it is tracked here.
    pub fn denied(&self, id: SessionId, reason: Reason, now: u64) {
        let Some(cause) = EndCause::of_denial(reason) else { return };
        let removed = lock(self.shard(id)).remove(&id.0);
        if let Some(e) = removed {
            self.end(id, &e, cause, now);
        }
    }

    /// Ends every session idle for its `idle_secs` (cause `idle`) or past its hard
    /// maximum (`max`) at `now`; returns how many ended.
    pub fn sweep(&self, now: u64) -> usize {
        let cause = |e: &Entry| {
            if now >= e.max_at {
                Some(EndCause::Max)
            } else if now.saturating_sub(e.last_seen) >= u64::from(e.idle_secs) {
                Some(EndCause::Idle)
            } else {
                None
            }
        };
        let mut ended = Vec::new();
        for shard in self.shards.iter() {
            let mut map = lock(shard);
            let due: Vec<(u64, EndCause)> = map.iter().filter_map(|(&id, e)| Some((id, cause(e)?))).collect();
            for (id, c) in due {
                if let Some(e) = map.remove(&id) {
                    ended.push((SessionId(id), c, e));
                }
            }
        }
        // Counted and logged outside the locks.
        let n = ended.len();
        for (id, c, e) in ended {
            self.end(id, &e, c, now);
        }
        n
    }

    /// Counts and logs one ended session.
    fn end(&self, id: SessionId, e: &Entry, cause: EndCause, now: u64) {
        let completion = completion(e.furthest);
        // The event is written before the counts move, so whoever sees a session counted
        // as ended finds its `session.ended` line already in the log.
        // The end of a session found idle is its last request, not the sweep's time.
        let ended_at = if cause == EndCause::Idle { e.last_seen } else { now };
        tracing::info!(
            target: "stile::playback",
            channel = e.channel.label(),
            session.id = tracing::field::display(id),
            cause = cause.as_str(),
            duration_secs = ended_at.saturating_sub(e.started_at),
            completion,
            position_secs = (e.furthest.total_ms > 0).then(|| f64::from(e.furthest.end_ms) / 1e3),
            total_secs = (e.furthest.total_ms > 0).then(|| f64::from(e.furthest.total_ms) / 1e3),
            "session.ended"
        );
        self.metrics.playback_tracked(-1);
        let counters = e.channel.playback(&self.metrics);
        counters.ended[cause as usize].inc();
        if let Some(c) = completion {
            counters.completion.observe(c);
        }
    }

    /// Sessions tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether no session is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Moves the furthest position forward (a later segment, or a longer presentation).
fn advance(furthest: &mut Position, p: Position) {
    if p.end_ms > furthest.end_ms {
        furthest.end_ms = p.end_ms;
    }
    if p.total_ms > furthest.total_ms {
        furthest.total_ms = p.total_ms;
    }
}

/// Furthest position over total duration, in 0..=1; `None` when nothing is known (live,
/// or no segment of a known playlist or MPD fetched).
fn completion(p: Position) -> Option<f64> {
    (p.total_ms > 0).then(|| (f64::from(p.end_ms) / f64::from(p.total_ms)).min(1.0))
}

/// Where VOD segments end (see the module docs): a direct-mapped table keyed by a
/// hash of the canonical segment path.
#[derive(Debug)]
pub struct Segments {
    slots: Box<[Mutex<(u64, Position)>]>,
    hasher: RandomState,
}

impl Segments {
    /// A table of `slots` entries (at least one), all memory reserved now.
    pub fn new(slots: usize) -> Segments {
        let slots = (0..slots.max(1)).map(|_| Mutex::new((0, Position::default()))).collect();
        Segments { slots, hasher: RandomState::new() }
    }

    fn slot(&self, path: &[u8]) -> (u64, &Mutex<(u64, Position)>) {
        // 0 marks an empty slot.
        let h = self.hasher.hash_one(path) | 1;
        (h, &self.slots[(h % self.slots.len() as u64) as usize])
    }

    /// Records where the segment at canonical `path` ends.
    pub fn record(&self, path: &[u8], position: Position) {
        let (h, slot) = self.slot(path);
        *lock(slot) = (h, position);
    }

    /// Where the segment at canonical `path` ends, if a VOD playlist named it.
    pub fn lookup(&self, path: &[u8]) -> Option<Position> {
        let (h, slot) = self.slot(path);
        let (key, position) = *lock(slot);
        (key == h).then_some(position)
    }

    /// Records the segments of the manifest served at canonical `path`: a DASH MPD
    /// ([`Segments::record_dash`]) when the path ends in `.mpd`, else an HLS playlist
    /// ([`Segments::record_hls`]). Returns the segments recorded.
    pub fn record_manifest(&self, path: &str, body: &[u8]) -> usize {
        let mpd = path.len() > 4 && path[path.len() - 4..].eq_ignore_ascii_case(".mpd");
        if mpd { self.record_dash(path, body) } else { self.record_hls(path, body) }
    }

    /// Records every segment of a static (VOD) DASH MPD served at canonical `path`:
    /// each segment's end and the presentation's duration ([`crate::mpd_positions`]),
    /// at most as many segments as the table has slots. 0 for a dynamic MPD or one
    /// without a duration.
    pub fn record_dash(&self, path: &str, body: &[u8]) -> usize {
        let Some((ends, total_ms)) = crate::mpd_positions::segment_ends(path, body, self.slots.len()) else {
            return 0;
        };
        if total_ms == 0 {
            return 0;
        }
        for (segment, end_ms) in &ends {
            self.record(segment.as_bytes(), Position { end_ms: *end_ms, total_ms });
        }
        ends.len()
    }

    /// Records every segment of a VOD HLS media playlist (`#EXT-X-ENDLIST`) served at
    /// canonical `playlist_path`: each URI's end time and the total duration. URIs are
    /// resolved against the playlist's path and canonicalised like request paths (a
    /// URI naming another host is resolved by its path: the edge never sees those
    /// requests, so their entries are never looked up). Returns the segments recorded;
    /// 0 for a live playlist, a master playlist, or one without durations.
    pub fn record_hls(&self, playlist_path: &str, body: &[u8]) -> usize {
        if !body.windows(14).any(|w| w == b"#EXT-X-ENDLIST") {
            return 0;
        }
        let mut pending: Option<f64> = None;
        let mut at = 0f64;
        let mut ends: Vec<(&[u8], f64)> = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
            } else if let Some(rest) = line.strip_prefix(b"#EXTINF:") {
                let dur = rest.split(|&b| b == b',').next().unwrap_or_default();
                pending = std::str::from_utf8(dur).ok().and_then(|d| d.trim().parse::<f64>().ok());
            } else if line[0] != b'#'
                && let Some(d) = pending.take().filter(|d| d.is_finite() && *d >= 0.0)
            {
                at += d;
                ends.push((line, at));
            }
        }
        let total = to_ms(at);
        if total == 0 {
            return 0;
        }
        let dir = &playlist_path[..playlist_path.rfind('/').map_or(0, |i| i + 1)];
        let (mut joined, mut resolved) = (String::new(), String::new());
        let mut n = 0;
        for (uri, end) in ends {
            let uri = &uri[..uri.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(uri.len())];
            let Ok(uri) = std::str::from_utf8(uri) else { continue };
            joined.clear();
            match uri_path(uri) {
                Some(absolute) => joined.push_str(absolute),
                None => {
                    joined.push_str(dir);
                    joined.push_str(uri);
                }
            }
            // Players resolve `.` and `..` before they request (RFC 3986 § 5.2.4).
            remove_dot_segments(&joined, &mut resolved);
            if let Ok(canonical) = stile_token::canonicalize_path(resolved.as_bytes()) {
                self.record(canonical.as_bytes(), Position { end_ms: to_ms(end), total_ms: total });
                n += 1;
            }
        }
        n
    }
}

/// The periodic idle sweep (`outcomes.sweep_interval_ms`), a Pingora background service.
#[derive(Debug)]
pub(crate) struct Sweeper {
    tracker: Arc<Tracker>,
    every: Duration,
    clock: SharedClock,
}

impl Sweeper {
    pub(crate) fn new(tracker: Arc<Tracker>, every: Duration, clock: SharedClock) -> Sweeper {
        Sweeper { tracker, every, clock }
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.tracker.sweep(self.clock.now());
                }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(id: u64, channel: Option<&str>) -> Started<'_> {
        Started { id: SessionId(id), channel, started_at: 100, idle_secs: 10, max_at: 1000 }
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode()).unwrap()
    }

    #[test]
    fn the_table_is_bounded_and_counts_the_sessions_it_cannot_hold() {
        let m = Arc::new(Metrics::new());
        let t = Tracker::new(32, m.clone());
        assert_eq!(t.capacity(), 32);
        // Random ids spread over the shards; far more than fit.
        for i in 0..10_000u64 {
            t.start(&started(i.wrapping_mul(0x9E37_79B9_7F4A_7C15), Some("email")), 100);
        }
        assert_eq!(t.len(), 32);
        let out = text(&m);
        assert!(out.contains("stile_edge_playback_untracked_total 9968"), "{out}");
        assert!(out.contains("stile_edge_playback_tracked_sessions 32"), "{out}");
        // Every start counted, tracked or not.
        assert!(out.contains(r#"stile_edge_playback_starts_total{channel="email"} 10000"#), "{out}");
        // Sessions seen under a full table are not tracked either (adoption obeys the bound).
        t.seen(&started(u64::MAX, None), 101, None);
        assert_eq!(t.len(), 32);
        // The sweep frees the table for new sessions.
        assert_eq!(t.sweep(110), 32);
        assert!(t.is_empty());
        t.start(&started(7, None), 200);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn sessions_end_once_by_their_cause_with_their_completion() {
        let m = Arc::new(Metrics::new());
        let t = Tracker::new(64, m.clone());
        let s = started(1, Some("tv"));
        t.start(&s, 100);
        t.seen(&s, 104, Some(Position { end_ms: 2000, total_ms: 8000 }));
        t.seen(&s, 105, Some(Position { end_ms: 6000, total_ms: 8000 }));
        t.seen(&s, 106, Some(Position { end_ms: 4000, total_ms: 8000 }));
        // Not idle at 115 (last seen 106, idle 10); idle at 116.
        assert_eq!(t.sweep(115), 0);
        assert_eq!(t.sweep(116), 1);
        t.denied(SessionId(1), Reason::Revoked, 117);
        let r = started(2, Some("tv"));
        t.start(&r, 100);
        t.denied(SessionId(2), Reason::Scope, 101);
        assert_eq!(t.len(), 1, "a scope denial ends nothing");
        t.denied(SessionId(2), Reason::Revoked, 102);
        t.denied(SessionId(2), Reason::Revoked, 103);
        let mut x = started(3, Some("tv"));
        x.max_at = 150;
        t.seen(&x, 140, None);
        assert_eq!(t.sweep(150), 1);
        let out = text(&m);
        for (cause, n) in [("idle", 1), ("revoked", 1), ("max", 1), ("expired", 0)] {
            let line = format!(r#"stile_edge_playback_ended_total{{cause="{cause}",channel="tv"}} {n}"#);
            assert!(out.contains(&line), "{line}\n{out}");
        }
        // Only the session that read a VOD playlist has a completion: 6 s of 8 s.
        assert!(out.contains(r#"stile_edge_playback_completion_ratio_sum{channel="tv"} 0.75"#), "{out}");
        assert!(out.contains(r#"stile_edge_playback_completion_ratio_count{channel="tv"} 1"#), "{out}");
        // Adopted (seen, never started here): no start.
        assert!(out.contains(r#"stile_edge_playback_starts_total{channel="tv"} 2"#), "{out}");
        assert!(out.contains("stile_edge_playback_tracked_sessions 0"), "{out}");
    }

    #[test]
    fn channels_share_the_request_counters_cap() {
        let m = Arc::new(Metrics::new());
        let t = Tracker::new(1024, m.clone());
        for i in 0..crate::metrics::MAX_CHANNEL_LABELS + 5 {
            let c = format!("c{i}");
            t.start(&started(i as u64, Some(&c)), 100);
        }
        t.start(&started(999, None), 100);
        let out = text(&m);
        assert!(out.contains(r#"stile_edge_playback_starts_total{channel="other"} 5"#), "{out}");
        assert!(out.contains(r#"stile_edge_playback_starts_total{channel="none"} 1"#), "{out}");
        let series = out.lines().filter(|l| l.starts_with("stile_edge_playback_starts_total{")).count();
        assert_eq!(series, crate::metrics::MAX_CHANNEL_LABELS + 2);
    }

    #[test]
    fn vod_playlists_record_where_each_segment_ends() {
        let s = Segments::new(1024);
        let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg0.ts?x=1\n#EXTINF:3.5,title\r\n\
                     ../v2/seg1.ts\n#EXTINF:2.5,\n/vod/abc/v1/seg2.ts\n#EXTINF:1,\nhttps://Edge.example/vod/abc/v1/%73eg3.ts\n\
                     #EXT-X-ENDLIST\n";
        assert_eq!(s.record_hls("/vod/abc/v1/index.m3u8", body), 4);
        let at = |p: &str| s.lookup(p.as_bytes()).map(|p| (p.end_ms, p.total_ms));
        assert_eq!(at("/vod/abc/v1/seg0.ts"), Some((4000, 11000)));
        assert_eq!(at("/vod/abc/v2/seg1.ts"), Some((7500, 11000)));
        assert_eq!(at("/vod/abc/v1/seg2.ts"), Some((10000, 11000)));
        assert_eq!(at("/vod/abc/v1/seg3.ts"), Some((11000, 11000)));
        assert_eq!(at("/vod/abc/v1/seg9.ts"), None);
        let mut out = String::new();
        for (path, want) in [("/a/b/../c/./d", "/a/c/d"), ("/a/..", "/"), ("/../a", "/a"), ("/a/b/.", "/a/b/")] {
            remove_dot_segments(path, &mut out);
            assert_eq!(out, want, "{path}");
        }
        // Live and master playlists record nothing.
        assert_eq!(s.record_hls("/live/index.m3u8", b"#EXTM3U\n#EXTINF:2,\nlive0.ts\n"), 0);
        assert_eq!(
            s.record_hls("/m.m3u8", b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv1/index.m3u8\n#EXT-X-ENDLIST\n"),
            0
        );
        // Bad durations are skipped, not trusted.
        assert_eq!(
            s.record_hls("/x/i.m3u8", b"#EXTINF:nan,\na.ts\n#EXTINF:-1,\nb.ts\n#EXTINF:1,\nc.ts\n#EXT-X-ENDLIST"),
            1
        );
    }

    #[test]
    fn a_one_slot_table_keeps_the_newest_segment_only() {
        let s = Segments::new(1);
        s.record(b"/a.ts", Position { end_ms: 1, total_ms: 2 });
        s.record(b"/b.ts", Position { end_ms: 2, total_ms: 2 });
        assert_eq!(s.lookup(b"/a.ts"), None);
        assert_eq!(s.lookup(b"/b.ts"), Some(Position { end_ms: 2, total_ms: 2 }));
    }
}
