//! The edge as a caching node, end to end: a real `stile edge` with `[cache]`
//! on, in front of an origin that counts every request it gets.
//!
//! Viewers with different links share one origin fetch; validation still runs
//! first (a revoked link is refused while its object is cached); a cold segment
//! asked by 100 viewers at once is fetched once; ranges come from the cached
//! object; stale objects are served while one background fetch refreshes them
//! and while the origin is down; the disk tier survives a restart and refuses a
//! damaged file; budgets hold under a larger workload; with origin pools the
//! cache fills from the pool's chosen origin and serves viewers over TLS and
//! HTTP/2 alike. The purge tests over the
//! push path are in `fleet/edge_cache_purge.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};
use stile_tests::cache::CountingOrigin;
use stile_tests::cache::Reply;
use stile_tests::cache::bytes;
use stile_tests::edge::*;
use stile_tests::media::*;
use stile_tests::net::metric_sum as metric;
use stile_tests::net::*;
use stile_tests::token::*;

const SEG: &str = "/vod/abc/v1/seg1.ts";

fn cached_edge(origin: &CountingOrigin, cache: &str) -> Edge {
    let extra = format!("{BASE_CONFIG}\n[cache]\nenabled = true\n{cache}\n");
    Edge::start(&Origin::external(origin.port), &extra, &state_json(1, serde_json::json!([]), None))
}

fn link(path: &str, id: u64) -> String {
    let t = mint(|c| c.token_id = stile_token::TokenId::from_u64(id));
    format!("{path}?st={t}")
}

fn cache_status(r: &Response) -> Option<&str> {
    r.header("x-stile-cache")
}

#[test]
fn viewers_with_different_links_share_one_origin_fetch() {
    let body = bytes(300_000, 1);
    let b = body.clone();
    let origin = CountingOrigin::start(move |s| match s.path() {
        SEG => Reply::ok(b.clone()).header("Set-Cookie", "origin-session=42").header("Cache-Control", "max-age=600"),
        "/vod/abc/v1/index.m3u8" => {
            Reply::ok("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg1.ts\n#EXT-X-ENDLIST\n")
        }
        _ => Reply::ok("nope").status(404),
    });
    let edge = cached_edge(&origin, "");

    let first = edge.get(&link(SEG, 1), &[]);
    assert_eq!((first.status, cache_status(&first)), (200, Some("miss")), "{}", edge.log());
    assert_eq!(first.body, body);
    // A stored answer is served from its stored header, to the viewer whose request filled it too.
    assert_eq!(first.header("set-cookie"), None, "the origin's Set-Cookie is never stored");
    let second = edge.get(&link(SEG, 2), &[]);
    let path_form = edge.get(&format!("/_st/{}{SEG}", mint(|c| c.token_id = stile_token::TokenId::from_u64(3))), &[]);
    for r in [&second, &path_form] {
        assert_eq!((r.status, cache_status(r)), (200, Some("hit")));
        assert_eq!(r.body, body);
        assert!(r.header("age").is_some(), "hits carry Age");
        assert_eq!(r.header("set-cookie"), None, "the origin's Set-Cookie is never stored");
    }
    assert_eq!(origin.count(SEG), 1, "one origin fetch for three viewers");
    let up = &origin.seen()[0];
    assert!(!up.target.contains("st="), "no token upstream: {up:?}");

    // Playlists: the origin's text is cached once, each viewer gets it rewritten with
    // their own token, and the rewritten answer is never stored downstream.
    let (l1, l2) = (link("/vod/abc/v1/index.m3u8", 11), link("/vod/abc/v1/index.m3u8", 12));
    let (p1, p2) = (edge.get(&l1, &[]), edge.get(&l2, &[]));
    assert_eq!((cache_status(&p1), cache_status(&p2)), (Some("miss"), Some("hit")));
    assert_eq!(origin.count("/vod/abc/v1/index.m3u8"), 1);
    let (t1, t2) = (l1.split("st=").nth(1).unwrap(), l2.split("st=").nth(1).unwrap());
    let (b1, b2) = (String::from_utf8_lossy(&p1.body), String::from_utf8_lossy(&p2.body));
    assert!(b1.contains(&format!("seg1.ts?st={t1}")) && !b1.contains(t2), "{b1}");
    assert!(b2.contains(&format!("seg1.ts?st={t2}")) && !b2.contains(t1), "{b2}");
    assert_eq!(p2.header("cache-control"), Some("private, no-store"));

    // The disk tier or memory never holds a token: the access log names the cache status.
    let log = edge.log();
    let access: Vec<&str> = log.lines().filter(|l| l.contains("stile::access")).collect();
    assert!(access.len() >= 5 && access.iter().all(|l| l.contains("\"cache\":")), "{log}");
    assert!(access.iter().any(|l| l.contains("\"cache\":\"hit\"")));
    let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    for series in [
        r#"stile_edge_cache_lookups_total{kind="segment",status="hit"} 2"#,
        r#"stile_edge_cache_lookups_total{kind="segment",status="miss"} 1"#,
        r#"stile_edge_cache_origin_fetches_total{status="miss"} 2"#,
    ] {
        assert!(m.contains(series), "{series} in\n{m}");
    }
}

#[test]
fn validation_runs_before_every_lookup() {
    let origin = CountingOrigin::start(|_| Reply::ok(bytes(1000, 2)).header("Cache-Control", "max-age=600"));
    let extra = format!("{BASE_CONFIG}\n[cache]\nenabled = true\n");
    let mut edge = Edge::start(&Origin::external(origin.port), &extra, &state_json(1, serde_json::json!([]), None));
    let (a, b) = (link(SEG, 0xa), link(SEG, 0xb));
    assert_eq!(edge.get(&a, &[]).status, 200);
    assert_eq!(cache_status(&edge.get(&a, &[])), Some("hit"));

    // Revoke link a (state file reload): refused while its object is still cached.
    let revoked = serde_json::json!([{ "kind": "token_id", "value": "000000000000000a", "expires_at": now() + 3600 }]);
    std::fs::write(edge.dir.path().join("state.json"), state_json(2, revoked, None)).unwrap();
    edge.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = edge.get(&a, &[]);
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((r.status, r.header("x-stile-reason")), (403, Some("revoked")), "{}", edge.log());
    assert_eq!(cache_status(&r), None, "a denial never reaches the cache");
    assert_eq!(cache_status(&edge.get(&b, &[])), Some("hit"), "the object is still cached for other links");
    // Expired, out of scope and missing tokens: refused, never served from the cache.
    let expired = mint(|c| {
        c.issued_at = now() - 100;
        c.expires_at = now() - 50;
    });
    assert_eq!(edge.get(&format!("{SEG}?st={expired}"), &[]).header("x-stile-reason"), Some("expired"));
    let other = mint(|c| c.scope = stile_token::Scope::parse("/vod/other/").unwrap());
    assert_eq!(edge.get(&format!("{SEG}?st={other}"), &[]).header("x-stile-reason"), Some("scope"));
    assert_eq!(edge.get(SEG, &[]).status, 401);
    assert_eq!(origin.count(SEG), 1);
    let _ = &mut edge;
}

#[test]
fn a_hundred_viewers_of_one_cold_segment_make_one_origin_fetch() {
    let body = bytes(2 << 20, 3);
    let b = body.clone();
    // Slow to start and slow to finish: waiters queue behind the lock, then stream the fill.
    let origin = CountingOrigin::start(move |_| {
        Reply::ok(b.clone()).delay(Duration::from_millis(300)).paced(8, Duration::from_millis(50))
    });
    let edge = cached_edge(&origin, "");
    let port = edge.port;
    let links: Vec<String> = (0..100).map(|i| link(SEG, 1000 + i)).collect();
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let threads: Vec<_> = links
        .into_iter()
        .map(|l| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                get(port, &l, &[]).expect("answer")
            })
        })
        .collect();
    let answers: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for r in &answers {
        assert_eq!(r.status, 200, "{}", edge.log());
        assert!(r.body == body, "every viewer gets the origin's bytes");
    }
    assert_eq!(origin.count(SEG), 1, "one origin fetch for 100 concurrent viewers");
    let misses = answers.iter().filter(|r| cache_status(r) == Some("miss")).count();
    assert!(misses >= 1, "the fetching request is a miss");
    let waits = metric(edge.admin, "stile_edge_cache_lock_waits_total").unwrap();
    assert!(waits >= 1.0, "viewers waited behind the fill: {waits}");
}

#[test]
fn ll_hls_blocking_reloads_collapse_behind_the_lock() {
    // The origin holds a blocking playlist request 2.5 s (as LL-HLS servers do until the part exists).
    let origin = CountingOrigin::start(|s| {
        let hold = if s.target.contains("_HLS_msn=7") { Duration::from_millis(2500) } else { Duration::ZERO };
        Reply::ok("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1\n#EXTINF:4,\nseg7.m4s\n")
            .header("Cache-Control", "max-age=1")
            .delay(hold)
    });
    let edge = cached_edge(&origin, "lock_timeout_ms = 20000\nlock_wait_timeout_ms = 20000");
    let port = edge.port;
    let target = |i: u64| format!("{}&_HLS_msn=7&_HLS_part=0", link("/vod/abc/live.m3u8", 500 + i));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let t = target(i);
            std::thread::spawn(move || get(port, &t, &[]).expect("answer"))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().status, 200);
    }
    assert_eq!(origin.count("/vod/abc/live.m3u8"), 1, "{:?}", origin.seen());
    // Another delivery directive is another object.
    assert_eq!(edge.get(&format!("{}&_HLS_msn=8", link("/vod/abc/live.m3u8", 9)), &[]).status, 200);
    assert_eq!(origin.count("/vod/abc/live.m3u8"), 2);
}

#[test]
fn ranges_are_served_from_the_cached_object() {
    let body = bytes(3 << 20, 4);
    let b = body.clone();
    let origin = CountingOrigin::start(move |_| Reply::ok(b.clone()).header("Cache-Control", "max-age=600"));
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB memory objects: this 3 MiB one is served from its disk file, seeking.
    let edge =
        cached_edge(&origin, &format!("memory_max_object_bytes = 1048576\ndisk_path = \"{}\"", dir.path().display()));
    let mp4 = "/vod/abc/movie.mp4";
    let first = edge.get(&link(mp4, 1), &[("Range", "bytes=100-199")]);
    assert_eq!((first.status, first.header("content-range")), (206, Some("bytes 100-199/3145728")), "{}", edge.log());
    assert_eq!(first.body, &body[100..200]);
    let up = origin.seen();
    assert_eq!(up.len(), 1, "{up:?}\n{}", edge.log());
    assert_eq!(up[0].header("range"), None, "the whole object is filled once");
    // Wait for the file, then ranges come from disk.
    until_ok(|| edge.get(&link(mp4, 2), &[("Range", "bytes=0-0")]).header("x-stile-cache") == Some("hit"));
    for (range, start, end) in [
        ("bytes=2097000-2097999", 2_097_000, 2_098_000),
        ("bytes=65530-131080", 65_530, 131_081),
        ("bytes=-10", body.len() - 10, body.len()),
        ("bytes=3145000-", 3_145_000, body.len()),
    ] {
        let r = edge.get(&link(mp4, 3), &[("Range", range)]);
        assert_eq!((r.status, cache_status(&r)), (206, Some("hit")), "{range}");
        assert!(r.body == body[start..end], "{range}: bytes differ from the origin's");
    }
    assert_eq!(edge.get(&link(mp4, 4), &[("Range", "bytes=9999999-")]).status, 416);
    let whole = edge.get(&link(mp4, 5), &[]);
    assert!(whole.status == 200 && whole.body == body);
    assert_eq!(origin.count(mp4), 1, "{:?}\n{}", origin.seen(), edge.log());
}

fn until_ok(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stale_objects_are_refreshed_in_the_background_and_revalidated_with_304() {
    let version = Arc::new(std::sync::atomic::AtomicU32::new(1));
    let v = version.clone();
    let origin = CountingOrigin::start(move |s| {
        let n = v.load(std::sync::atomic::Ordering::SeqCst);
        let etag = format!("\"v{n}\"");
        match s.path() {
            "/vod/abc/live.m3u8" => Reply::ok(format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n# version {n}\n"))
                .header("Cache-Control", "max-age=1, stale-while-revalidate=30"),
            _ if s.header("if-none-match") == Some(etag.as_str()) => Reply::default().status(304).header("ETag", &etag),
            _ => Reply::ok(format!("segment v{n}")).header("Cache-Control", "max-age=1").header("ETag", &etag),
        }
    });
    let edge = cached_edge(&origin, "stale_while_revalidate_secs = 0");
    let pl = "/vod/abc/live.m3u8";
    assert_eq!(cache_status(&edge.get(&link(pl, 1), &[])), Some("miss"));
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2100));
    // Stale: the old playlist at once, one background fetch refreshes it.
    let stale = edge.get(&link(pl, 2), &[]);
    assert_eq!(cache_status(&stale), Some("stale"));
    assert!(String::from_utf8_lossy(&stale.body).contains("version 1"));
    until_ok(|| origin.count(pl) == 2);
    until_ok(|| String::from_utf8_lossy(&edge.get(&link(pl, 3), &[]).body).contains("version 2"));
    assert_eq!(origin.count(pl), 2, "one background refresh");

    // Expired with a validator: the origin answers 304 and the stored body is served.
    let seg = "/vod/abc/seg1.ts";
    assert_eq!(edge.get(&link(seg, 4), &[]).body, b"segment v2");
    std::thread::sleep(Duration::from_millis(2100));
    let r = edge.get(&link(seg, 5), &[]);
    assert_eq!((r.status, cache_status(&r)), (200, Some("revalidated")), "{}", edge.log());
    assert_eq!(r.body, b"segment v2");
    let last = origin.seen().into_iter().rev().find(|s| s.path() == seg).unwrap();
    assert_eq!(last.header("if-none-match"), Some("\"v2\""));
    assert_eq!(cache_status(&edge.get(&link(seg, 6), &[])), Some("hit"));
}

#[test]
fn cached_vod_keeps_playing_through_an_origin_outage() {
    let root = tempfile::tempdir().unwrap();
    make_hls(root.path());
    let files = root.path().to_owned();
    let serve = move |s: &stile_tests::cache::Seen| match std::fs::read(files.join(s.path().trim_start_matches('/'))) {
        Ok(b) => Reply::ok(b),
        Err(_) => Reply::ok("nope").status(404),
    };
    let origin = CountingOrigin::start(serve);
    // Short playlist lifetimes, so the replay below finds them stale (served stale-if-error).
    let edge = cached_edge(&origin, "[cache.ttl]\nvod_playlist_secs = 1\nmultivariant_playlist_secs = 1");
    let url = |id| format!("http://127.0.0.1:{}{}", edge.port, link("/vod/abc/master.m3u8", id));
    ffmpeg_play(&url(1), &[]).expect("plays through the edge");
    let fetched = origin.seen().len();
    assert!(fetched >= 9, "master, two playlists, six segments: {fetched}");
    origin.stop();
    std::thread::sleep(Duration::from_millis(1100));
    ffmpeg_play(&url(2), &[]).expect("cached VOD keeps playing with the origin down");
    let log = edge.log();
    assert!(log.contains("\"cache\":\"stale\""), "stale playlists served: {log}");
    // What was never cached fails cleanly, its reason in the access log.
    let r = edge.get(&link("/vod/abc/v1/seg99.ts", 3), &[]);
    assert_eq!(r.status, 502, "{}", edge.log());
    let line = edge.log().lines().rfind(|l| l.contains("seg99")).unwrap().to_owned();
    assert!(line.contains("\"status\":502") && line.contains("\"error\":\"ConnectRefused\""), "{line}");
}

#[test]
fn an_origin_that_times_out_is_a_504() {
    let origin = CountingOrigin::start(|_| Reply::ok("late").delay(Duration::from_secs(3)));
    let extra = format!("{BASE_CONFIG}\n[cache]\nenabled = true\n");
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = Edge::write_config(
        dir.path(),
        origin.port,
        port,
        admin,
        &extra,
        "",
        &state_json(1, serde_json::json!([]), None),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace("[origin]\n", "[origin]\nread_timeout_ms = 500\n");
    std::fs::write(&config, text).unwrap();
    let mut edge = Edge { port, admin, child: Edge::spawn(&config, &[]), dir };
    edge.wait_ready();
    let r = edge.get(&link(SEG, 1), &[]);
    assert_eq!(r.status, 504, "{}", edge.log());
    let line = edge.log().lines().rfind(|l| l.contains("stile::access")).unwrap().to_owned();
    assert!(line.contains("\"error\":\"ReadTimedout\""), "{line}");
}

#[test]
fn the_disk_tier_survives_a_restart_and_refuses_damaged_files() {
    let (a, b) = (bytes(200_000, 5), bytes(50_000, 6));
    let (a2, b2) = (a.clone(), b.clone());
    let origin = CountingOrigin::start(move |s| {
        let body = if s.path().ends_with("a.ts") { a2.clone() } else { b2.clone() };
        Reply::ok(body).header("Cache-Control", "max-age=600")
    });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{BASE_CONFIG}\n[cache]\nenabled = true\ndisk_path = \"{}\"\n", dir.path().display());
    let mut edge = Edge::start(&Origin::external(origin.port), &extra, &state_json(1, serde_json::json!([]), None));
    for (p, body) in [("/vod/abc/a.ts", &a), ("/vod/abc/b.ts", &b)] {
        assert_eq!(&edge.get(&link(p, 1), &[]).body, body);
    }
    let files = || -> Vec<std::path::PathBuf> {
        walk(dir.path()).into_iter().filter(|p| p.parent().is_some_and(|d| d.file_name().unwrap().len() == 2)).collect()
    };
    until_ok(|| files().len() == 2);

    // Restart: both objects are hits from disk, no origin request.
    edge.child.kill().unwrap();
    edge.child.wait().unwrap();
    // Damage b's file: one body byte flipped.
    let damaged = files().into_iter().find(|f| std::fs::metadata(f).unwrap().len() < 100_000).unwrap();
    let mut raw = std::fs::read(&damaged).unwrap();
    let at = raw.len() - 10;
    raw[at] ^= 0xff;
    std::fs::write(&damaged, raw).unwrap();
    edge.child = Edge::spawn(&edge.dir.path().join("edge.toml"), &[]);
    edge.wait_ready();
    let r = edge.get(&link("/vod/abc/a.ts", 2), &[]);
    assert_eq!((cache_status(&r), r.body == a), (Some("hit"), true), "{}", edge.log());
    assert_eq!(origin.count("/vod/abc/a.ts"), 1, "served from the disk tier after the restart");
    let r = edge.get(&link("/vod/abc/b.ts", 2), &[]);
    assert_eq!((cache_status(&r), r.body == b), (Some("miss"), true), "the damaged file is refused, never served");
    assert_eq!(origin.count("/vod/abc/b.ts"), 2);
    assert!(metric(edge.admin, "stile_edge_cache_disk_errors_total").unwrap() >= 1.0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn budgets_hold_under_a_workload_larger_than_them() {
    let origin = CountingOrigin::start(|s| {
        let seed = s.path().bytes().fold(0u8, |a, b| a.wrapping_add(b));
        Reply::ok(bytes(256 << 10, seed)).header("Cache-Control", "max-age=600")
    });
    let dir = tempfile::tempdir().unwrap();
    let (mem, disk) = (2u64 << 20, 4u64 << 20);
    let edge = cached_edge(
        &origin,
        &format!(
            "memory_bytes = {mem}\nmemory_max_object_bytes = 524288\ndisk_bytes = {disk}\nmax_object_bytes = 1048576\n\
             disk_path = \"{}\"",
            dir.path().display()
        ),
    );
    // 40 objects of 256 KiB: 10 MiB through a 2 MiB memory tier and a 4 MiB disk tier.
    for round in 0..2 {
        for i in 0..40 {
            let r = edge.get(&link(&format!("/vod/abc/s{i}.ts"), round * 100 + i), &[]);
            assert_eq!(r.status, 200);
        }
    }
    // Files are written, and evicted files removed, off the request path: a file that
    // lands just before the eviction it causes is over the budget for a moment. Wait
    // (bounded) until the tier is within it in five samples in a row, 50 ms apart.
    let on_disk = || -> u64 { walk(dir.path()).iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum() };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut within = 0;
    while within < 5 && std::time::Instant::now() < deadline {
        within = if on_disk() <= disk + (1 << 10) { within + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_disk = on_disk();
    assert!(on_disk <= disk + (1 << 10), "disk tier {on_disk} over its budget {disk}");
    let stored = |tier: &str| {
        let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
        let prefix = format!("stile_edge_cache_stored_bytes{{tier=\"{tier}\"}} ");
        m.lines().find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok()).unwrap()
    };
    assert!(stored("memory") <= mem, "memory tier {} over {mem}", stored("memory"));
    assert!(stored("disk") <= disk && stored("disk") > 0);
    let evicted = metric(edge.admin, "stile_edge_cache_evictions_total").unwrap_or(0.0);
    let m = String::from_utf8(get(edge.admin, "/metrics", &[]).unwrap().body).unwrap();
    assert!(m.contains("stile_edge_cache_evictions_total{tier=\"disk\"}") && evicted >= 0.0);
    assert!(
        m.lines().any(|l| l.starts_with("stile_edge_cache_evictions_total{tier=\"disk\"}") && !l.ends_with(" 0")),
        "{m}"
    );
}

#[test]
fn a_pool_fills_the_cache_from_its_chosen_origin_and_hits_go_out_over_tls_and_h2() {
    let body = bytes(200_000, 7);
    let serve = |b: Vec<u8>| {
        move |s: &stile_tests::cache::Seen| match s.path() {
            "/vod/abc/m/seg1.ts" | "/vod/abc/m/seg2.ts" => Reply::ok(b.clone()).header("Cache-Control", "max-age=600"),
            _ => Reply::ok("nope").status(404),
        }
    };
    let (a, b) = (CountingOrigin::start(serve(body.clone())), CountingOrigin::start(serve(body.clone())));
    let certs = tempfile::tempdir().unwrap();
    let pki = stile_tests::tls::Pki::new(certs.path());
    let leaf = pki.leaf("a", &["a.test"]);
    let (tls, admin, port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, state_json(1, serde_json::json!([]), None)).unwrap();
    let config = format!(
        "listen = [\"127.0.0.1:{port}\"]\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 2\n\
         grace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n\
         pid_file = \"{d}/edge.pid\"\nupgrade_sock = \"{d}/upgrade.sock\"\n{BASE_CONFIG}\n\
         [cache]\nenabled = true\n\
         [[origin.pools]]\nname = \"media\"\nprefixes = [\"/vod/abc/m/\"]\n\
         [[origin.pools.servers]]\nname = \"a\"\naddress = \"127.0.0.1:{pa}\"\nhost = \"media.origin\"\n\
         [[origin.pools.servers]]\nname = \"b\"\naddress = \"127.0.0.1:{pb}\"\nhost = \"media.origin\"\n\
         {tls_toml}\n[state]\nfile = \"{s}\"\n",
        d = dir.path().display(),
        s = state.display(),
        pa = a.port,
        pb = b.port,
        tls_toml = stile_tests::tls::tls_config(tls, &[(&leaf.0, &leaf.1)], ""),
    );
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let child = Edge::spawn(&path, &[]);
    let mut edge = Edge { port, admin, dir, child };
    edge.wait_ready();
    stile_tests::tls::wait_port(tls, &mut edge);

    // HTTP/2 over TLS: a miss filled from one origin of the pool, then hits.
    let h2 = stile_tests::tls::H2Client::connect(tls, "a.test", pki.client(&[b"h2"]));
    let first = h2.get(&link("/vod/abc/m/seg1.ts", 1), &[]);
    assert_eq!((first.status, first.header("x-stile-cache")), (200, Some("miss")));
    assert!(first.body == body, "the origin's bytes");
    let second = h2.get(&link("/vod/abc/m/seg1.ts", 2), &[]);
    assert_eq!((second.status, second.header("x-stile-cache")), (200, Some("hit")));
    assert!(second.body == body);
    let fetched: Vec<_> = a.seen().into_iter().chain(b.seen()).filter(|s| s.path() == "/vod/abc/m/seg1.ts").collect();
    assert_eq!(fetched.len(), 1, "one fill for the pool: {fetched:?}");
    assert_eq!(fetched[0].header("host"), Some("media.origin"), "the pool's Host upstream");
    assert!(!fetched[0].target.contains("st="), "{fetched:?}");
    // HTTP/1.1 over TLS and plain HTTP share the entry.
    let r = stile_tests::tls::https_get(tls, "a.test", pki.client(&[b"http/1.1"]), &link("/vod/abc/m/seg1.ts", 3), &[]);
    assert_eq!((r.status, r.header("x-stile-cache")), (200, Some("hit")));
    let r = edge.get(&link("/vod/abc/m/seg1.ts", 4), &[]);
    assert_eq!((r.status, cache_status(&r)), (200, Some("hit")));

    // The origin that filled it goes down: its object is still a hit, and a new object
    // is filled from the other origin of the pool (connect error, retried there).
    let (filler, other) = if a.count("/vod/abc/m/seg1.ts") == 1 { (&a, &b) } else { (&b, &a) };
    filler.stop();
    let r = h2.get(&link("/vod/abc/m/seg1.ts", 5), &[]);
    assert_eq!((r.status, r.header("x-stile-cache")), (200, Some("hit")));
    let r = h2.get(&link("/vod/abc/m/seg2.ts", 6), &[]);
    assert_eq!((r.status, r.header("x-stile-cache")), (200, Some("miss")), "{}", edge.log());
    assert!(r.body == body);
    assert_eq!(other.count("/vod/abc/m/seg2.ts"), 1);
    let r = h2.get(&link("/vod/abc/m/seg2.ts", 7), &[]);
    assert_eq!((r.status, r.header("x-stile-cache")), (200, Some("hit")));
    assert_eq!(other.count("/vod/abc/m/seg2.ts"), 1);
    // A path no pool serves is not cached (and answered 404 by the edge).
    assert_eq!(edge.get(&link("/vod/abc/x.ts", 8), &[]).status, 404);
    let log = edge.log();
    assert!(log.contains(r#""proto":"h2""#) && log.contains(r#""cache":"hit""#), "{log}");
}

/// One response with a `Content-Length` body, read off a kept-alive connection;
/// `pause`: the viewer reads its body slowly (64 KiB, then a pause), so the edge
/// finds the socket full and waits for it.
fn read_one(r: &mut std::io::BufReader<std::net::TcpStream>, pause: Duration) -> Response {
    use std::io::Read;
    let head = read_head(r).expect("a response head");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(b"\r\n");
    let mut resp = parse_response(&raw, true).expect("a parsable head");
    let len: usize = resp.header("content-length").expect("Content-Length").parse().unwrap();
    let mut body = vec![0; len];
    let mut at = 0;
    while at < len {
        let n = r.read(&mut body[at..len.min(at + (64 << 10))]).expect("body bytes");
        assert!(n > 0, "the connection ended {at} bytes into a {len}-byte body");
        at += n;
        std::thread::sleep(pause);
    }
    resp.body = body;
    resp
}

#[test]
fn memory_hits_are_answered_by_the_edge_with_sendfile_on_a_kept_alive_connection() {
    use std::io::Write;
    let big = bytes(5 << 20, 7);
    let small = bytes(2048, 8);
    let (b, s) = (big.clone(), small.clone());
    let origin = CountingOrigin::start(move |seen| match seen.path() {
        "/vod/abc/v1/big.ts" => Reply::ok(b.clone()).header("Cache-Control", "max-age=600"),
        _ => Reply::ok(s.clone()).header("Cache-Control", "max-age=600"),
    });
    let edge = cached_edge(&origin, "");
    let (big_link, small_link) = (link("/vod/abc/v1/big.ts", 1), link("/vod/abc/v1/small.ts", 2));
    for l in [&big_link, &small_link] {
        assert_eq!(cache_status(&edge.get(l, &[])), Some("miss"), "{}", edge.log());
    }
    let sent_before = metric(edge.admin, "stile_edge_cache_zero_copy_bytes_total").unwrap_or(0.0);

    // Three hits on one connection: the big one (sent with sendfile), the small one
    // (through Pingora's writer), the big one again read slowly.
    let conn = std::net::TcpStream::connect(("127.0.0.1", edge.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = std::io::BufReader::new(conn);
    for (target, body, pause) in [
        (&big_link, &big, Duration::ZERO),
        (&small_link, &small, Duration::ZERO),
        (&big_link, &big, Duration::from_millis(5)),
    ] {
        write!(w, "GET {target} HTTP/1.1\r\nHost: edge.test\r\n\r\n").unwrap();
        let resp = read_one(&mut r, pause);
        assert_eq!((resp.status, cache_status(&resp)), (200, Some("hit")), "{}", edge.log());
        assert!(resp.body == *body, "the bytes differ from the origin's");
        assert_eq!(resp.header("content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(resp.header("connection"), Some("keep-alive"));
        assert!(resp.header("age").is_some() && resp.header("date").is_some(), "{:?}", resp.headers);
        assert_eq!(resp.header("cache-control"), Some("max-age=600"));
    }
    let sent = metric(edge.admin, "stile_edge_cache_zero_copy_bytes_total").unwrap() - sent_before;
    assert_eq!(sent, 2.0 * big.len() as f64, "both big hits went out with sendfile, the small one did not");

    // A viewer that asks to close gets `Connection: close`, then the end of the connection.
    write!(w, "GET {big_link} HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n").unwrap();
    let last = read_one(&mut r, Duration::ZERO);
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    assert_eq!(std::io::Read::read_to_end(&mut r, &mut rest).unwrap(), 0, "closed after the answer");
    assert_eq!(origin.count("/vod/abc/v1/big.ts"), 1);

    // The access log and the lookups count these hits as any other.
    let log = edge.log();
    let hits = log
        .lines()
        .filter(|l| l.contains("stile::access") && l.contains("\"cache\":\"hit\"") && l.contains("\"bytes\":5242880"))
        .count();
    assert_eq!(hits, 3, "{log}");
    assert_eq!(metric(edge.admin, r#"stile_edge_cache_lookups_total{kind="segment",status="hit"}"#), Some(4.0));
}
