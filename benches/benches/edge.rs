//! Edge micro-costs, one question per group:
//!
//! - `edge_validation/*`: what does the edge spend validating one typical admitted
//!   request? The whole `Validator::validate` — state load, transport lookup,
//!   canonicalisation, token parse + MAC + claim checks, revocation lookup and the
//!   upstream target — against a state holding 100 k revoked token ids plus a few
//!   subject and prefix revocations (so every revocation kind is probed). Goal ≤ 1 µs.
//!   `query_session` is the same request carrying a playback session credential
//!   (session tag, session times, client binding) instead of the link, as a player
//!   sends it on every segment: from the third request on it is a hit in the
//!   verified-session cache (parse, key and session tag skipped; times, scope,
//!   bindings and revocations checked). `query_session_uncached` is the same with
//!   the cache off (`token.session_cache_entries = 0`), and `query_session_miss` with
//!   a 64-entry cache sent 4096 different credentials in turn, so nearly every request
//!   misses and offers its session to the cache: what the first request of each
//!   credential costs (`query_session_distinct_uncached`: the same 4096 credentials with
//!   the cache off, so the difference is the cache's own cost on a miss). The cache
//!   admits a credential on its second request (a doorkeeper remembers the first):
//!   `query_session_admit_x2` sends each credential twice in a row and times both
//!   requests, the second of which is admitted and evicts another entry.
//! - `revocation/*`: how long does the revocation lookup take at 1 M and 10 M revoked
//!   token ids, for a revoked token (`hit`) and a good one (`miss`)? Each iteration asks
//!   about a different token (cycling through 4096 parsed tokens with ids spread over
//!   the table), so the figure includes the cache misses of a table far larger than the
//!   CPU caches, as in production. The bytes per entry, from the table's allocated
//!   capacity, are printed and written to `target/criterion/notes/` for the report.
//!   Goals ≤ 100 ns and ≤ 40 B/entry.
//! - `playlist_rewrite/*`: how fast are HLS playlists rewritten (MB/s of input)?
//!   A master playlist (8 variants, audio and subtitle renditions, I-frame streams,
//!   session key) and a two-hour media playlist (3600 segments, byte ranges off,
//!   `EXT-X-KEY` rotation every 100 segments).
//!
//! - `mpd_rewrite/*`: the same for DASH MPDs: a live-profile MPD (8 video
//!   representations and 3 audio ones sharing `SegmentTemplate`s, `BaseURL`s) and a
//!   two-hour on-demand MPD with a `SegmentList` of 3600 `SegmentURL`s.
//!
//! Run: `cargo bench -p stile-benches --bench edge`

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stile_edge::EdgeConfig;
use stile_edge::revocation::{Revocations, RevocationsBuilder};
use stile_edge::state::{SharedState, State};
use stile_edge::validate::{Input, Validator};
use stile_token::{
    Claims, Country, IpBinding, KEY_LEN, KeyRing, Scope, SecretKey, SessionId, SessionPolicy, Token, TokenId,
};

const NOW: u64 = 1_800_000_000;
const PATH: &str = "/vod/4f7c2a9e/1080p/seg_00042.ts";

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(1, &SecretKey::from_bytes([1; KEY_LEN]));
    ring.insert(2, &SecretKey::from_bytes([2; KEY_LEN]));
    ring
}

/// A typical link: prefix scope, IP binding, subject, channel (no country rule, so no
/// GeoIP lookup — the common case; the token benches cover country checks).
fn claims(id: u64) -> Claims {
    Claims {
        key_id: 2,
        token_id: TokenId::from_u64(id),
        issued_at: NOW - 60,
        not_before: None,
        expires_at: NOW + 3600,
        scope: Scope::parse("/vod/4f7c2a9e/").unwrap(),
        ip: Some(IpBinding::for_client("203.0.113.9".parse().unwrap(), 32, 64).unwrap()),
        countries: None,
        subject: Some("user-8c1f2d".into()),
        channel: Some("email".into()),
    }
}

/// SplitMix64's finaliser: a bijection, so `mix(i)` for distinct `i` never collide —
/// ids `mix(0..n)` are in the set and `mix(n..)` are certainly not.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A builder holding `n` revoked token ids `mix(0..n)`, valid for another hour.
fn token_ids(n: u64) -> RevocationsBuilder {
    let mut b = RevocationsBuilder::with_capacity(n as usize);
    for i in 0..n {
        b.token_id(TokenId::from_u64(mix(i)), NOW + 3600);
    }
    b
}

fn bench_validation(c: &mut Criterion) {
    let ring = ring();
    let mut b = token_ids(100_000);
    b.subject("user-revoked", NOW).path("/vod/takedown/", NOW).path("/live/x/", NOW);
    let state = SharedState::new(
        State { version: 1, keys: ring.clone(), revocations: b.build(NOW), fresh_at: NOW, ..State::default() },
        true,
    );
    let mut config = EdgeConfig::default();
    config.cookie.enabled = true;
    let v = Validator::new(&config);
    let uncached = Validator::new(&EdgeConfig {
        token: stile_edge::TokenConfig { session_cache_entries: 0, ..config.token.clone() },
        ..config.clone()
    });
    let token = stile_token::sign(&claims(0x1122_3344_5566_7788), &ring).unwrap();
    let query = format!("{PATH}?st={token}");
    let path = format!("/_st/{token}{PATH}");
    let cookie = format!("lang=en; stile={token}");
    let client = Some("203.0.113.9".parse().unwrap());
    // A playback session credential (docs/sessions.md) on the same claims plus a session
    // policy binding clients to their /24, as an edge issues it for this client.
    let policy = SessionPolicy { idle_secs: 120, max_secs: 14_400, bind_v4: 24, bind_v6: 64 };
    let link = stile_token::sign_with_session(&claims(0x1122_3344_5566_7788), Some(&policy), &ring).unwrap();
    let link = Token::parse(&link).unwrap();
    let session = stile_token::session::start(&link, SessionId(7), NOW - 30, 120, client, &ring).unwrap();
    let query_session = format!("{PATH}?st={session}");
    let mut g = c.benchmark_group("edge_validation");
    for (name, v, target, cookie) in [
        ("query_token", &v, query.as_str(), None),
        ("query_session", &v, query_session.as_str(), None),
        ("query_session_uncached", &uncached, query_session.as_str(), None),
        ("path_token", &v, path.as_str(), None),
        ("cookie_token", &v, PATH, Some(&cookie)),
    ] {
        let input = Input { target: target.as_bytes(), client_ip: client, now: NOW };
        let check = v.validate(&state.load(), &input, cookie.map(|c| c.as_bytes()), || None);
        assert_eq!(check.result, Ok(()), "{name} must be admitted");
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = state.load();
                v.validate(&s, black_box(&input), cookie.map(|c| c.as_bytes()), || Country::parse("FR"))
            })
        });
    }
    let small = Validator::new(&EdgeConfig {
        token: stile_edge::TokenConfig { session_cache_entries: 64, ..config.token.clone() },
        ..config.clone()
    });
    let distinct: Vec<String> = (0..4096)
        .map(|i| {
            let s = stile_token::session::start(&link, SessionId(i), NOW - 30, 120, client, &ring).unwrap();
            format!("{PATH}?st={s}")
        })
        .collect();
    // Each credential once (`_miss`), or twice in a row so the second is admitted and
    // evicts another (`_admit`, the time of both requests).
    for (name, v, repeat) in [
        ("query_session_miss", &small, 1),
        ("query_session_distinct_uncached", &uncached, 1),
        ("query_session_admit_x2", &small, 2),
    ] {
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % distinct.len();
                let input = Input { target: distinct[next].as_bytes(), client_ip: client, now: NOW };
                let s = state.load();
                for _ in 1..repeat {
                    black_box(v.validate(&s, black_box(&input), None, || Country::parse("FR")));
                }
                v.validate(&s, black_box(&input), None, || Country::parse("FR"))
            })
        });
    }
    assert!(small.session_cache().misses() > 10 * small.session_cache().hits().max(1), "mostly misses");
    g.finish();
}

fn bench_revocation(c: &mut Criterion) {
    let ring = ring();
    const PROBES: usize = 4096;
    let mut notes = String::from("Revocation token-id table, from its allocated capacity:\n\n");
    let mut g = c.benchmark_group("revocation");
    for (label, n) in [("1M", 1_000_000u64), ("10M", 10_000_000)] {
        let started = Instant::now();
        let set: Revocations = token_ids(n).build(NOW);
        let built = started.elapsed();
        assert_eq!(set.counts().token_ids as u64, n);
        let bytes = set.token_id_table_bytes();
        let per_entry = bytes as f64 / n as f64;
        let line = format!(
            "- {label} entries: {:.1} MiB, {per_entry:.1} B/entry (goal ≤ 40; built in {:.2} s)",
            bytes as f64 / (1 << 20) as f64,
            built.as_secs_f64()
        );
        println!("{line}");
        writeln!(notes, "{line}").unwrap();
        // Tokens spread over the whole table: hits are ids in the set, misses are not.
        let parse = |id: u64| Token::parse(&stile_token::sign(&claims(id), &ring).unwrap()).unwrap();
        let stride = n / PROBES as u64;
        let hits: Vec<Token> = (0..PROBES as u64).map(|i| parse(mix(i * stride + 7))).collect();
        let misses: Vec<Token> = (0..PROBES as u64).map(|i| parse(mix(n + i))).collect();
        assert!(hits.iter().all(|t| set.is_revoked(t, PATH)));
        assert!(!misses.iter().any(|t| set.is_revoked(t, PATH)));
        for (kind, tokens) in [("hit", &hits), ("miss", &misses)] {
            let mut i = 0;
            g.bench_function(format!("{kind}_{label}"), |b| {
                b.iter(|| {
                    i = (i + 1) % PROBES;
                    set.is_revoked(black_box(&tokens[i]), PATH)
                })
            });
        }
        drop(set);
    }
    g.finish();
    stile_benches::write_note("revocation_memory.md", &notes);
}

fn bench_playlist(c: &mut Criterion) {
    let token = stile_token::sign(&claims(42), &ring()).unwrap();
    let master = master_playlist();
    let media = media_playlist(3600);
    let mut g = c.benchmark_group("playlist_rewrite");
    for (name, text) in [("master", &master), ("media_3600_segments", &media)] {
        let out = stile_edge::playlist::rewrite(text.as_bytes(), "st", &token, Some("cdn.example"));
        assert!(out.len() > text.len(), "{name} must be rewritten");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| stile_edge::playlist::rewrite(black_box(text.as_bytes()), "st", &token, Some("cdn.example")))
        });
    }
    g.finish();
}

fn bench_mpd(c: &mut Criterion) {
    let token = stile_token::sign(&claims(42), &ring()).unwrap();
    let template = template_mpd();
    let list = segment_list_mpd(3600);
    let mut g = c.benchmark_group("mpd_rewrite");
    for (name, text) in [("segment_template", &template), ("segment_list_3600", &list)] {
        let out = stile_edge::mpd::rewrite(text.as_bytes(), "st", &token, Some("cdn.example"), "");
        assert!(out.len() > text.len(), "{name} must be rewritten");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| stile_edge::mpd::rewrite(black_box(text.as_bytes()), "st", &token, Some("cdn.example"), ""))
        });
    }
    g.finish();
}

fn template_mpd() -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" mediaPresentationDuration=\"PT2H\" \
         minBufferTime=\"PT4S\">\n  <BaseURL>https://cdn.example/vod/4f7c2a9e/</BaseURL>\n  <Period id=\"0\">\n",
    );
    s.push_str("    <AdaptationSet id=\"0\" contentType=\"video\" segmentAlignment=\"true\">\n");
    s.push_str("      <SegmentTemplate timescale=\"90000\" duration=\"180000\" initialization=\"video/$RepresentationID$/init.mp4\" media=\"video/$RepresentationID$/seg_$Number%05d$.m4s\" startNumber=\"1\"/>\n");
    for (h, bw) in
        [(144, 200), (240, 400), (360, 800), (480, 1400), (540, 2000), (720, 3500), (1080, 6000), (2160, 16000)]
    {
        let w = h * 16 / 9;
        writeln!(s, "      <Representation id=\"{h}p\" mimeType=\"video/mp4\" codecs=\"avc1.640028\" bandwidth=\"{bw}000\" width=\"{w}\" height=\"{h}\" frameRate=\"25\"/>").unwrap();
    }
    s.push_str("    </AdaptationSet>\n");
    for (i, lang) in ["en", "de", "fr"].iter().enumerate() {
        writeln!(s, "    <AdaptationSet id=\"{}\" contentType=\"audio\" lang=\"{lang}\">\n      <Representation id=\"a-{lang}\" mimeType=\"audio/mp4\" codecs=\"mp4a.40.2\" bandwidth=\"128000\">\n        <BaseURL>audio/{lang}/</BaseURL>\n        <SegmentTemplate timescale=\"48000\" duration=\"96000\" initialization=\"init.mp4\" media=\"seg_$Number%05d$.m4s\"/>\n      </Representation>\n    </AdaptationSet>", i + 1).unwrap();
    }
    s.push_str("  </Period>\n</MPD>\n");
    s
}

fn segment_list_mpd(segments: usize) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\" \
         profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\">\n <Period>\n  <AdaptationSet mimeType=\"video/mp4\">\n   \
         <Representation id=\"1080p\" bandwidth=\"6000000\" codecs=\"avc1.640028\">\n    <SegmentList timescale=\"1000\" duration=\"2000\">\n     \
         <Initialization sourceURL=\"1080p/init.mp4\"/>\n",
    );
    for i in 0..segments {
        writeln!(s, "     <SegmentURL media=\"1080p/seg_{i:05}.m4s\"/>").unwrap();
    }
    s.push_str("    </SegmentList>\n   </Representation>\n  </AdaptationSet>\n </Period>\n</MPD>\n");
    s
}

fn master_playlist() -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    s.push_str("#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"keys/session.key\",KEYFORMAT=\"identity\"\n");
    for (lang, name) in [("en", "English"), ("de", "Deutsch"), ("fr", "Français")] {
        writeln!(
            s,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",LANGUAGE=\"{lang}\",NAME=\"{name}\",AUTOSELECT=YES,URI=\"audio/{lang}/index.m3u8\""
        )
        .unwrap();
        writeln!(
            s,
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",LANGUAGE=\"{lang}\",NAME=\"{name}\",URI=\"subs/{lang}/index.m3u8\""
        )
        .unwrap();
    }
    for (h, bw) in
        [(144, 200), (240, 400), (360, 800), (480, 1400), (540, 2000), (720, 3500), (1080, 6000), (2160, 16000)]
    {
        let w = h * 16 / 9;
        writeln!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={bw}000,AVERAGE-BANDWIDTH={}000,CODECS=\"avc1.640028,mp4a.40.2\",RESOLUTION={w}x{h},FRAME-RATE=25.000,AUDIO=\"aac\",SUBTITLES=\"subs\"\n{h}p/index.m3u8",
            bw * 9 / 10
        )
        .unwrap();
        writeln!(s, "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={}000,RESOLUTION={w}x{h},URI=\"{h}p/iframes.m3u8\"", bw / 10)
            .unwrap();
    }
    s
}

fn media_playlist(segments: usize) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for i in 0..segments {
        if i % 100 == 0 {
            writeln!(s, "#EXT-X-KEY:METHOD=AES-128,URI=\"https://cdn.example/keys/{}.key\",IV=0x{i:032x}", i / 100)
                .unwrap();
        }
        writeln!(s, "#EXTINF:2.000,\nseg_{i:05}.m4s").unwrap();
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

criterion_group!(benches, bench_validation, bench_revocation, bench_playlist, bench_mpd);
criterion_main!(benches);
