//! Routing, choice, passive health and the retry policy, without a network.

use super::*;

fn config(toml_text: &str) -> OriginConfig {
    let c: crate::EdgeConfig = toml::from_str(&format!("{toml_text}\n[state]\nfile = 'x'\n")).unwrap();
    c.validate().unwrap();
    c.origin
}

fn origins(toml_text: &str) -> Origins {
    Origins::build(&config(toml_text), &prometheus::Registry::new()).unwrap()
}

const TWO_POOLS: &str = r#"
[[origin.pools]]
name = "lib-a"
prefixes = ["/vod/a/", "/live/a/"]
[[origin.pools.servers]]
name = "a1"
address = "127.0.0.1:9001"
[[origin.pools.servers]]
name = "a2"
address = "127.0.0.1:9002"
[[origin.pools.servers]]
name = "a3"
address = "127.0.0.1:9003"
[[origin.pools]]
name = "rest"
prefixes = ["/"]
[[origin.pools.servers]]
name = "r1"
address = "127.0.0.1:9100"
"#;

#[test]
fn longest_prefix_routes_on_segment_boundaries() {
    let o = origins(TWO_POOLS);
    assert_eq!(o.route(b"/vod/a/x/seg.ts"), Some(0));
    assert_eq!(o.route(b"/live/a/index.m3u8"), Some(0));
    assert_eq!(o.route(b"/vod/ab/seg.ts"), Some(1), "prefixes end in /: /vod/a/ does not take /vod/ab/");
    assert_eq!(o.route(b"/vod/a"), Some(1));
    assert_eq!(o.route(b"/other"), Some(1));
    let only = origins(
        "[[origin.pools]]\nname='v'\nprefixes=['/vod/']\n[[origin.pools.servers]]\nname='v1'\naddress='127.0.0.1:1'\n",
    );
    assert_eq!(only.route(b"/live/x"), None, "no catch-all pool: no route");
}

fn port(peer: &HttpPeer) -> u16 {
    peer._address.as_inet().unwrap().port()
}

#[test]
fn round_robin_skips_down_origins_and_tried_ones() {
    let o = origins(TWO_POOLS);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let mut a = o.begin(0);
        seen.push(port(&o.pick(&mut a).0));
        o.end(&a);
    }
    for p in [9001, 9002, 9003] {
        assert_eq!(seen.iter().filter(|&&x| x == p).count(), 2, "{seen:?}");
    }
    o.pools[0].servers[1].active_up.store(false, Ordering::Relaxed);
    for _ in 0..6 {
        let mut a = o.begin(0);
        assert_ne!(port(&o.pick(&mut a).0), 9002, "a down origin gets no first try");
        o.end(&a);
    }
    for s in &o.pools[0].servers {
        s.active_up.store(false, Ordering::Relaxed);
    }
    let mut a = o.begin(0);
    let first = port(&o.pick(&mut a).0);
    assert!([9001, 9002, 9003].contains(&first), "all down: the first try still goes somewhere");
    assert!(!o.failure(&mut a, ErrorKind::Connect, Failed::Connect, true, false), "retries only go to origins up");
    o.end(&a);
}

#[test]
fn passive_health_takes_an_origin_out_after_consecutive_failures() {
    let o = origins(&format!("{TWO_POOLS}\n[origin.passive]\nfailures = 2\ndown_secs = 60\n"));
    let s = &o.pools[1].servers[0];
    let mut a = o.begin(1);
    o.pick(&mut a);
    o.failure(&mut a, ErrorKind::Connect, Failed::Connect, true, false);
    assert!(s.up(o.now_ms()), "one failure is not enough");
    o.pick(&mut a);
    assert!(!o.response(&mut a, 200, true));
    o.pick(&mut a);
    o.failure(&mut a, ErrorKind::Io, Failed::BeforeResponse, true, false);
    assert!(s.up(o.now_ms()), "a success in between resets the count");
    o.pick(&mut a);
    assert!(!o.response(&mut a, 503, true), "the only origin: nowhere to retry");
    assert!(!s.up(o.now_ms()), "two consecutive failures (a 5xx counts): out");
    o.end(&a);
}

#[test]
fn retries_follow_the_documented_policy() {
    let o = origins(&format!("{TWO_POOLS}\n[origin.retry]\nattempts = 2\nbudget_min = 100\n"));
    // Connect failure on a GET: retried on another origin of the pool.
    let mut a = o.begin(0);
    let first = port(&o.pick(&mut a).0);
    assert!(o.failure(&mut a, ErrorKind::Connect, Failed::Connect, true, false));
    assert!(Origins::retry_pending(&a));
    let second = port(&o.pick(&mut a).0);
    assert_ne!(first, second, "a retry goes to another origin");
    // 5xx: retried too (on_5xx), and the third origin is the last one allowed.
    assert!(o.response(&mut a, 502, true));
    let third = port(&o.pick(&mut a).0);
    assert!(third != first && third != second);
    assert!(!o.response(&mut a, 503, true), "attempts = 2: the third 5xx is final");
    assert_eq!(Origins::retries(&a), 2);
    o.end(&a);

    // Not idempotent: never retried.
    let mut a = o.begin(0);
    o.pick(&mut a);
    assert!(!o.failure(&mut a, ErrorKind::Connect, Failed::Connect, false, false));
    o.end(&a);
    // Something already reached the viewer: never retried.
    let mut a = o.begin(0);
    o.pick(&mut a);
    assert!(!o.failure(&mut a, ErrorKind::Io, Failed::BeforeResponse, true, true));
    o.end(&a);
    // A 5xx with on_5xx = false is forwarded.
    let o = origins(&format!("{TWO_POOLS}\n[origin.retry]\non_5xx = false\n"));
    let mut a = o.begin(0);
    o.pick(&mut a);
    assert!(!o.response(&mut a, 500, true));
    o.end(&a);
}

#[test]
fn the_retry_budget_bounds_retries_in_flight() {
    let o = origins(&format!(
        "{TWO_POOLS}\n[origin.retry]\nbudget_min = 2\nbudget_percent = 10\n[origin.passive]\nfailures = 0\n"
    ));
    // 10 requests in flight: budget max(2, 10 % of 10) = 2 retries in flight.
    let mut reqs: Vec<Attempts> = (0..10).map(|_| o.begin(0)).collect();
    let mut granted = 0;
    for a in &mut reqs {
        o.pick(a);
        if o.failure(a, ErrorKind::Connect, Failed::Connect, true, false) {
            granted += 1;
        }
    }
    assert_eq!(granted, 2);
    assert_eq!(o.pools[0].series.budget_exhausted.get(), 8);
    for a in &reqs {
        o.end(a);
    }
    assert_eq!(o.pools[0].retries_in_flight.load(Ordering::Relaxed), 0, "slots come back at the end");
    assert_eq!(o.pools[0].in_flight.load(Ordering::Relaxed), 0);
}

#[test]
fn shorthand_origin_is_one_pool_and_hosts_default_to_the_address() {
    let o = origins("[origin]\naddress = '127.0.0.1:8123'\nhost = 'media.internal'\n");
    assert_eq!(o.route(b"/anything"), Some(0));
    let mut a = o.begin(0);
    let (peer, host) = o.pick(&mut a);
    assert_eq!((port(&peer), host), (8123, "media.internal"));
    assert!(!pingora::upstreams::peer::Peer::tls(&*peer));
    let o = origins("[origin]\naddress = '[::1]:8124'\n");
    let mut a = o.begin(0);
    assert_eq!(o.pick(&mut a).1, "[::1]");
}
