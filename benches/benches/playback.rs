//! Playback outcome tracking (`stile_edge::playback`), one question per group:
//!
//! - `playback/seen_segment`: what does tracking add to one segment request admitted
//!   under a session? A lookup of the segment's end in the VOD segment table (65 536
//!   slots, 3600 segments recorded) and the update of the session's entry, in a
//!   tracker holding 100 000 sessions; each iteration is another session (cycling
//!   through 4096) and another segment. Compare with `edge_validation/*` (the request's
//!   validation, `benches/edge.rs`): the goal is a small fraction of it.
//! - `playback/seen_manifest`: the same for a request without a position (a live
//!   playlist, a segment no VOD playlist named): the entry update alone.
//! - `playback/start_and_end`: a session started, then ended by a denial
//!   (`revoked`): counters, completion, and the `session.ended` event (no subscriber
//!   installed, so the event costs its level check only).
//! - `playback/record_vod_playlist`: reading a two-hour VOD media playlist (3600
//!   segments) into the segment table, once per playlist fetch under a session.
//!
//! Run: `cargo bench -p stile-benches --bench playback`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use stile_edge::Metrics;
use stile_edge::playback::{Segments, Started, Tracker};
use stile_token::{Reason, SessionId};

const NOW: u64 = 1_800_000_000;
const SESSIONS: u64 = 100_000;
const SEGMENTS: usize = 3600;

fn id(i: u64) -> SessionId {
    SessionId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

fn started(i: u64) -> Started<'static> {
    Started { id: id(i), channel: Some("email"), started_at: NOW, idle_secs: 60, max_at: NOW + 14_400 }
}

fn playlist() -> Vec<u8> {
    let mut p = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for i in 0..SEGMENTS {
        p.push_str(&format!("#EXTINF:2.000,\nseg_{i:05}.ts\n"));
    }
    p.push_str("#EXT-X-ENDLIST\n");
    p.into_bytes()
}

fn bench(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let tracker = Tracker::new(SESSIONS as usize + 4096, metrics.clone());
    for i in 0..SESSIONS {
        tracker.start(&started(i), NOW);
    }
    let segments = Segments::new(65_536);
    let body = playlist();
    assert_eq!(segments.record_hls("/vod/4f7c2a9e/1080p/index.m3u8", &body), SEGMENTS);
    let paths: Vec<String> = (0..SEGMENTS).map(|i| format!("/vod/4f7c2a9e/1080p/seg_{i:05}.ts")).collect();
    let sessions: Vec<Started<'static>> = (0..4096).map(|i| started(i * 24)).collect();

    let mut g = c.benchmark_group("playback");
    let mut n = 0usize;
    g.bench_function("seen_segment", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let s = &sessions[n % sessions.len()];
            let position = segments.lookup(paths[n % SEGMENTS].as_bytes());
            tracker.seen(black_box(s), NOW + 10, black_box(position));
        })
    });
    g.bench_function("seen_manifest", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            tracker.seen(black_box(&sessions[n % sessions.len()]), NOW + 10, None);
        })
    });
    let mut next = SESSIONS + 1_000_000;
    g.bench_function("start_and_end", |b| {
        b.iter(|| {
            next += 1;
            let s = started(next);
            tracker.start(black_box(&s), NOW);
            tracker.denied(s.id, Reason::Revoked, NOW + 5);
        })
    });
    g.bench_function("record_vod_playlist", |b| {
        b.iter(|| segments.record_hls(black_box("/vod/4f7c2a9e/1080p/index.m3u8"), black_box(&body)))
    });
    g.finish();
    // `start_and_end` leaves nothing behind; sessions whose segments reached the
    // film's end completed and left (VOD completion ends a session).
    assert!(tracker.len() <= SESSIONS as usize, "{} sessions tracked", tracker.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
