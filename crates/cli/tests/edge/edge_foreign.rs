//! End to end: other vendors' signed links through the real `stile edge`
//! (`[[foreign]]`, docs/migration.md), against a recording origin. Akamai links
//! come from Akamai's own generator (`akamai-edgeauth` from PyPI, through
//! tests/python/akamai_edgeauth_tokens.py); nginx hashes from the `openssl`
//! recipe of nginx's documentation; Cloud CDN URL prefixes from Google's
//! documented recipe (HMAC-SHA1 with Python's standard library); Bunny links from
//! `stile_foreign::bunny::sign` (Bunny publishes no generator on a registry);
//! Media CDN dual tokens from Google's documented HMAC-SHA256 recipe (checked
//! below against the published sample).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stile_tests::akamai::vendor_tokens;
use stile_tests::edge::*;
use stile_tests::media::*;
use stile_tests::net::*;
use stile_tests::token::*;

const AKAMAI_KEY: &str = "52a152a152a152a152a152a152a1";
/// Google's sample key (cloud.google.com/cdn/docs/using-signed-urls).
const CLOUD_KEY: &str = "nZtRohdNF9m3cKM24IcK4w==";
const BUNNY_KEY: &str = "bunny-zone-security-key";
const NGINX_SECRET: &str = "secret";
/// The HMAC key of Google's dual-token sample (media_cdn/dualtoken_test.py).
const MEDIA_HMAC_KEY: &str = "g_SlMILiIWKqsC6Z2L7gy0sReDOqtSrJrE7CXNr5Nl8=";
const SEG: &str = "/vod/abc/v1/seg0.ts";

fn foreign_config(akamai_sunset: &str) -> String {
    format!(
        r#"{BASE_CONFIG}
[[foreign]]
format = "akamai"
hosts = ["127.0.0.1"]
path_prefixes = ["/vod/"]
refuse_after = {akamai_sunset}
[foreign.akamai]
token_name = "hdnts"

[[foreign]]
format = "cloud-cdn"
path_prefixes = ["/vod/"]

[[foreign]]
format = "bunny"
hosts = ["127.0.0.1"]
path_prefixes = ["/vod/"]

[[foreign]]
format = "nginx-secure-link"
path_prefixes = ["/vod/"]

[[foreign]]
format = "media-cdn"
path_prefixes = ["/vod/"]
"#
    )
}

fn state(version: u64, revocations: Value) -> String {
    let mut v: Value = serde_json::from_str(&state_json(version, revocations, None)).unwrap();
    v["foreign_keys"] = json!([
        { "format": "akamai", "name": "primary", "key": AKAMAI_KEY },
        { "format": "cloud-cdn", "name": "my-key", "key": CLOUD_KEY },
        { "format": "bunny", "name": "zone", "key": BUNNY_KEY },
        { "format": "nginx-secure-link", "name": "secret", "key": NGINX_SECRET },
        { "format": "media-cdn", "name": "shared", "key": MEDIA_HMAC_KEY },
    ]);
    v.to_string()
}

fn setup(akamai_sunset: &str) -> (tempfile::TempDir, Origin, Edge) {
    let content = tempfile::tempdir().unwrap();
    make_hls(content.path());
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, &foreign_config(akamai_sunset), &state(1, json!([])));
    (content, origin, edge)
}

fn akamai_case(start: u64, end: u64, acl: &str, id: &str) -> Value {
    json!({
        "opts": { "key": AKAMAI_KEY, "token_name": "hdnts", "start_time": start, "end_time": end, "session_id": id },
        "acl": acl,
    })
}

fn reason(r: &Response) -> (u16, Option<&str>) {
    (r.status, r.header("x-stile-reason"))
}

/// The value of one series of the admin listener's metrics; panics if it is not exported.
fn metric(edge: &Edge, series: &str) -> f64 {
    stile_tests::net::metric(edge.admin, series).unwrap_or_else(|| panic!("{series} not exported"))
}

/// Waits (bounded) until `f` holds: for a state reload to take effect.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn flip_last_hex(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == '0' { '1' } else { '0' });
    t
}

#[test]
fn akamai_links_from_akamais_generator_are_judged_like_stile_links() {
    let (_content, origin, edge) = setup("2099-01-01T00:00:00Z");
    let now = now();
    let tokens = vendor_tokens(&json!([
        akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-42"),
        akamai_case(now - 600, now - 60, "/vod/abc/*", "viewer-43"),
        akamai_case(now - 60, now + 600, "/vod/xyz/*", "viewer-44"),
    ]));
    let (good, expired, elsewhere) = (&tokens[0], &tokens[1], &tokens[2]);

    let ok = edge.get(&format!("{SEG}?x=1&hdnts={good}"), &[]);
    assert_eq!(reason(&ok), (200, None), "{}", edge.log());
    assert_eq!(&origin.request_lines().last().unwrap()[..], "GET /vod/abc/v1/seg0.ts?x=1 HTTP/1.1");
    let by_cookie = edge.get(SEG, &[("Cookie", &format!("a=b; hdnts={good}"))]);
    assert_eq!(reason(&by_cookie), (200, None));
    let head = origin.requests().last().unwrap().to_ascii_lowercase();
    assert!(head.contains("cookie: a=b\r\n") && !head.contains("hdnts"), "the vendor cookie is stripped: {head}");

    let cases = [
        (format!("{SEG}?hdnts={}", flip_last_hex(good)), "bad_signature"),
        (format!("{SEG}?hdnts={expired}"), "expired"),
        (format!("{SEG}?hdnts={elsewhere}"), "scope"),
        (format!("/vod/abd/v1/seg0.ts?hdnts={good}"), "scope"),
        (format!("{SEG}?hdnts={good}&hdnts={good}"), "malformed"),
    ];
    for (target, want) in &cases {
        assert_eq!(reason(&edge.get(target, &[])), (403, Some(*want)), "{target}");
    }
    // Outside the entry's path prefixes the link is nobody's: Stile's own `missing`.
    let outside = edge.get(&format!("/other/abc/seg0.ts?hdnts={good}"), &[]);
    assert_eq!(reason(&outside), (401, Some("missing")));
    // Hostile paths with a valid foreign token are `malformed`, never the secret.
    for attack in PATH_ATTACKS {
        let r = edge.get(&format!("{attack}?hdnts={good}"), &[]);
        assert_eq!(reason(&r).1, Some("malformed"), "{attack}");
        assert!(matches!(r.status, 400 | 403), "{attack}: {}", r.status);
    }

    // Counted by format and result.
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="akamai",result="admitted"}"#), 2.0);
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="akamai",result="bad_signature"}"#), 1.0);
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="akamai",result="expired"}"#), 1.0);
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="akamai",result="scope"}"#), 2.0);

    // Revocation by the link's id (`id`, written as `session_id` by the generator): a subject revocation.
    let revoked = json!([{ "kind": "subject", "value": "viewer-42", "issued_before": now + 3600 }]);
    std::fs::write(edge.dir.path().join("state.json"), state(2, revoked)).unwrap();
    eventually("the id revocation takes effect", || {
        reason(&edge.get(&format!("{SEG}?hdnts={good}"), &[])) == (403, Some("revoked"))
    });
    // By path prefix, as for Stile links.
    let fresh = &vendor_tokens(&json!([akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-45")]))[0];
    assert_eq!(reason(&edge.get(&format!("{SEG}?hdnts={fresh}"), &[])), (200, None));
    let by_prefix = json!([{ "kind": "prefix", "value": "/vod/abc/", "issued_before": now }]);
    std::fs::write(edge.dir.path().join("state.json"), state(3, by_prefix)).unwrap();
    eventually("the prefix revocation takes effect", || {
        reason(&edge.get(&format!("{SEG}?hdnts={fresh}"), &[])) == (403, Some("revoked"))
    });

    // The origin and the logs never see the token.
    for t in &tokens {
        let mac = t.rsplit("hmac=").next().unwrap();
        for head in origin.requests() {
            assert!(!head.contains(mac) && !head.contains("hdnts"), "{head}");
        }
        assert!(!edge.log().contains(mac), "the MAC reached the log");
    }
    let log = edge.log();
    assert!(log.contains(r#""format":"akamai""#), "{log}");
    assert!(log.contains(r#""foreign.id":"viewer-42""#), "{log}");
}

#[test]
fn an_akamai_tokened_master_playlist_plays() {
    let (_content, origin, edge) = setup("2099-01-01T00:00:00Z");
    let now = now();
    let token = &vendor_tokens(&json!([akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-1")]))[0];
    let master = edge.get(&format!("/vod/abc/master.m3u8?hdnts={token}"), &[]);
    assert_eq!(master.status, 200, "{}", edge.log());
    let body = String::from_utf8(master.body.clone()).unwrap();
    assert!(body.contains(&format!("\nv1/index.m3u8?hdnts={token}\n")), "{body}");
    assert_rewritten_framing(&master);
    // Cookie mode: the vendor's own cookie, for the directory the ACL covers.
    let set_cookie = master.header("set-cookie").expect("cookie mode sets the link as Akamai's cookie");
    let (cookie, attributes) = set_cookie.split_once("; ").unwrap();
    assert_eq!(cookie, format!("hdnts={token}"));
    assert!(attributes.starts_with("Path=/vod/abc/; Max-Age=") && attributes.ends_with("; HttpOnly; SameSite=Lax"));
    let by_cookie = edge.get("/vod/abc/v2/index.m3u8", &[("Cookie", cookie)]);
    assert_eq!(reason(&by_cookie), (200, None));
    assert!(String::from_utf8_lossy(&by_cookie.body).contains("\nseg0.ts\n"), "cookie links need no rewriting");
    let media = edge.get(&format!("/vod/abc/v1/index.m3u8?hdnts={token}"), &[]);
    let media = String::from_utf8(media.body).unwrap();
    let seg = media.lines().find(|l| l.starts_with("seg")).expect("a segment line");
    assert_eq!(seg, format!("seg0.ts?hdnts={token}"));
    assert_eq!(edge.get(&format!("/vod/abc/v1/{seg}"), &[]).status, 200);

    let n = origin.request_lines().len();
    ffmpeg_play(&format!("http://127.0.0.1:{}/vod/abc/master.m3u8?hdnts={token}", edge.port), &[])
        .expect("ffmpeg plays the Akamai-tokened stream");
    let lines = origin.request_lines();
    for want in ["/vod/abc/v1/seg2.ts", "/vod/abc/v2/seg2.ts"] {
        assert!(lines[n..].iter().any(|l| l == &format!("GET {want} HTTP/1.1")), "{want}: {lines:#?}");
    }
    let mac = token.rsplit("hmac=").next().unwrap();
    assert!(origin.requests().iter().all(|h| !h.contains(mac) && !h.contains("hdnts")));
}

#[test]
fn after_the_sunset_old_links_are_missing() {
    let (_content, _origin, edge) = setup("\"2020-01-01T00:00:00Z\"");
    let now = now();
    let token = &vendor_tokens(&json!([akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-1")]))[0];
    assert_eq!(reason(&edge.get(&format!("{SEG}?hdnts={token}"), &[])), (401, Some("missing")));
}

/// Google's documented URL-prefix recipe (`sign_url_prefix` of the Cloud CDN
/// samples), with Python's standard library: the query pairs after `?`.
fn cloud_cdn_prefix(prefix: &str, expires: u64, key: &str) -> String {
    let script = "import base64,hashlib,hmac,sys\n\
        prefix, expires, key = sys.argv[1], sys.argv[2], sys.argv[3]\n\
        enc = base64.urlsafe_b64encode(prefix.encode()).decode()\n\
        policy = f'URLPrefix={enc}&Expires={expires}&KeyName=my-key'\n\
        sig = base64.urlsafe_b64encode(hmac.new(base64.urlsafe_b64decode(key), policy.encode(), hashlib.sha1).digest()).decode()\n\
        print(f'{policy}&Signature={sig}')\n";
    let out = Command::new("python3").args(["-c", script, prefix, &expires.to_string(), key]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn cloud_cdn_url_prefixes_play_and_are_carried_to_segments() {
    let (content, origin, edge) = setup("2099-01-01T00:00:00Z");
    make_dash(content.path());
    let now = now();
    let prefix = format!("http://127.0.0.1:{}/vod/abc/", edge.port);
    let signed = cloud_cdn_prefix(&prefix, now + 600, CLOUD_KEY);
    let ok = edge.get(&format!("{SEG}?{signed}"), &[]);
    assert_eq!(reason(&ok), (200, None), "{}", edge.log());
    let other_key = cloud_cdn_prefix(&prefix, now + 600, "AAAAAAAAAAAAAAAAAAAAAA==");
    let expired = cloud_cdn_prefix(&prefix, now - 60, CLOUD_KEY);
    for (target, want) in [
        (format!("{SEG}?{other_key}"), "bad_signature"),
        (format!("{SEG}?{expired}"), "expired"),
        (format!("/vod/abd/seg0.ts?{signed}"), "scope"),
    ] {
        assert_eq!(reason(&edge.get(&target, &[])), (403, Some(want)), "{target}");
    }
    let master = edge.get(&format!("/vod/abc/master.m3u8?{signed}"), &[]);
    let body = String::from_utf8(master.body).unwrap();
    assert!(body.contains(&format!("\nv2/index.m3u8?{signed}\n")), "{body}");
    ffmpeg_play(&format!("http://127.0.0.1:{}/vod/abc/master.m3u8?{signed}", edge.port), &[])
        .expect("ffmpeg plays the Cloud-CDN-signed stream");
    // DASH: the pairs' `&` is `&amp;` in the MPD, and ffmpeg plays it.
    let mpd = edge.get(&format!("/vod/abc/dash/manifest.mpd?{signed}"), &[]);
    assert_eq!(reason(&mpd), (200, None));
    let mpd = String::from_utf8(mpd.body).unwrap();
    assert!(mpd.contains(&signed.replace('&', "&amp;")), "{mpd}");
    ffmpeg_play(&format!("http://127.0.0.1:{}/vod/abc/dash/manifest.mpd?{signed}", edge.port), &[])
        .expect("ffmpeg plays the Cloud-CDN-signed DASH presentation");
    let sig = signed.rsplit("Signature=").next().unwrap();
    assert!(origin.requests().iter().all(|h| !h.contains(sig) && !h.contains("URLPrefix")));
    assert!(!edge.log().contains(sig));
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="cloud-cdn",result="expired"}"#), 1.0);
}

#[test]
fn bunny_and_nginx_links() {
    let (_content, origin, edge) = setup("2099-01-01T00:00:00Z");
    let now = now();
    let bunny = |path: &str, expires: u64, token_path: Option<&str>| {
        let claims = stile_foreign::bunny::Claims { path, expires, token_path, ..Default::default() };
        stile_foreign::bunny::sign(BUNNY_KEY.as_bytes(), &claims)
    };
    let dir = bunny(SEG, now + 600, Some("/vod/abc/"));
    assert_eq!(reason(&edge.get(&dir, &[])), (200, None), "{}", edge.log());
    assert_eq!(&origin.request_lines().last().unwrap()[..], "GET /vod/abc/v1/seg0.ts HTTP/1.1");
    let first = dir.split("HS256-").nth(1).unwrap().chars().next().unwrap();
    let tampered = dir.replacen(&format!("HS256-{first}"), if first == 'A' { "HS256-B" } else { "HS256-A" }, 1);
    for (target, want) in [
        (tampered, "bad_signature"),
        (bunny(SEG, now - 60, Some("/vod/abc/")), "expired"),
        (bunny("/vod/abd/seg0.ts", now + 600, Some("/vod/abc/")), "scope"),
    ] {
        assert_eq!(reason(&edge.get(&target, &[])), (403, Some(want)), "{target}");
    }

    // The path form, and hostile paths behind it.
    let path_form = |path: &str| {
        let claims = stile_foreign::bunny::Claims {
            path,
            expires: now + 600,
            token_path: Some("/vod/abc/"),
            path_form: true,
            ..Default::default()
        };
        stile_foreign::bunny::sign(BUNNY_KEY.as_bytes(), &claims)
    };
    assert_eq!(reason(&edge.get(&path_form(SEG), &[])), (200, None));
    assert_eq!(&origin.request_lines().last().unwrap()[..], "GET /vod/abc/v1/seg0.ts HTTP/1.1");
    for attack in ["/vod/abc/%2e%2e/%2e%2e/secret.ts", "/vod/abc/..%2fsecret.ts", "/vod/abc/./seg0.ts"] {
        assert_eq!(reason(&edge.get(&path_form(attack), &[])), (403, Some("malformed")), "{attack}");
    }

    // nginx: the documentation's recipe, `echo -n '…' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`.
    let nginx = |expires: u64, uri: &str| {
        let input = format!("{expires}{uri}127.0.0.1 {NGINX_SECRET}");
        let out = Command::new("sh")
            .args(["-c", "printf %s \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =", "sh", &input])
            .output()
            .unwrap();
        assert!(out.status.success());
        format!("{uri}?md5={}&expires={expires}", String::from_utf8(out.stdout).unwrap().trim())
    };
    let ok = nginx(now + 600, SEG);
    assert_eq!(reason(&edge.get(&ok, &[])), (200, None), "{}", edge.log());
    assert_eq!(&origin.request_lines().last().unwrap()[..], "GET /vod/abc/v1/seg0.ts HTTP/1.1");
    assert_eq!(reason(&edge.get(&nginx(now - 60, SEG), &[])), (403, Some("expired")));
    let moved = ok.replacen(SEG, "/vod/abc/v1/seg1.ts", 1);
    assert_eq!(reason(&edge.get(&moved, &[])), (403, Some("bad_signature")));
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="bunny",result="admitted"}"#), 2.0);
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="bunny",result="malformed"}"#), 3.0);
    assert_eq!(
        metric(&edge, r#"stile_edge_foreign_requests_total{format="nginx-secure-link",result="admitted"}"#),
        1.0
    );
    for head in origin.requests() {
        assert!(!head.contains("HS256") && !head.contains("md5=") && !head.contains("expires="), "{head}");
    }
}

#[test]
fn a_stile_token_is_judged_by_stile_even_beside_a_foreign_one() {
    let (_content, origin, edge) = setup("2099-01-01T00:00:00Z");
    let now = now();
    let akamai = &vendor_tokens(&json!([akamai_case(now - 60, now + 600, "/vod/abc/*", "v")]))[0];
    let expired_stile = mint(|c| {
        c.issued_at = now - 200;
        c.expires_at = now - 100;
    });
    let r = edge.get(&format!("{SEG}?st={expired_stile}&hdnts={akamai}"), &[]);
    assert_eq!(reason(&r), (403, Some("expired")));
    // A Stile token given twice is Stile's `malformed`, whatever else the request carries.
    let r = edge.get(&format!("{SEG}?st={expired_stile}&st={expired_stile}&hdnts={akamai}"), &[]);
    assert_eq!(reason(&r), (403, Some("malformed")));
    assert_eq!(reason(&edge.get(&format!("{SEG}?hdnts={akamai}"), &[])), (200, None));
    assert_eq!(metric(&edge, r#"stile_edge_foreign_requests_total{format="akamai",result="admitted"}"#), 1.0);
    // Admitted by a Stile token, the request still sheds the vendor's cookie before the origin.
    let r = edge.get(&format!("{SEG}?st={}", mint(|_| {})), &[("Cookie", &format!("hdnts={akamai}; a=b"))]);
    assert_eq!(reason(&r), (200, None));
    let head = origin.requests().last().unwrap().to_ascii_lowercase();
    assert!(head.contains("cookie: a=b\r\n") && !head.contains("hdnts"), "{head}");
}

#[test]
fn the_cache_keys_and_stores_foreign_links_without_their_token() {
    let content = tempfile::tempdir().unwrap();
    make_hls(content.path());
    let origin = Origin::start(content.path());
    let extra = format!("{}\n[cache]\nenabled = true\n", foreign_config("2099-01-01T00:00:00Z"));
    let edge = Edge::start(&origin, &extra, &state(1, json!([])));
    let now = now();
    let tokens = vendor_tokens(&json!([
        akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-a"),
        akamai_case(now - 60, now + 600, "/vod/abc/*", "viewer-b"),
    ]));
    let (a, b) = (&tokens[0], &tokens[1]);
    let cache = |r: &Response| (r.status, r.header("x-stile-cache").map(str::to_owned));
    assert_eq!(cache(&edge.get(&format!("{SEG}?hdnts={a}"), &[])), (200, Some("miss".into())));
    assert_eq!(cache(&edge.get(&format!("{SEG}?hdnts={b}"), &[])), (200, Some("hit".into())), "one key for both links");
    assert_eq!(origin.request_lines().iter().filter(|l| l.contains("seg0.ts")).count(), 1);
    // Validation still guards hits.
    assert_eq!(reason(&edge.get(&format!("{SEG}?hdnts={}", flip_last_hex(a)), &[])), (403, Some("bad_signature")));
    assert_eq!(reason(&edge.get(SEG, &[])), (401, Some("missing")));
    // The stored playlist is the origin's text: each viewer's copy carries that viewer's link only.
    let first = edge.get(&format!("/vod/abc/master.m3u8?hdnts={a}"), &[]);
    let second = edge.get(&format!("/vod/abc/master.m3u8?hdnts={b}"), &[]);
    assert_eq!(second.header("x-stile-cache"), Some("hit"));
    let (first, second) = (String::from_utf8(first.body).unwrap(), String::from_utf8(second.body).unwrap());
    assert!(first.contains(&format!("v1/index.m3u8?hdnts={a}")) && !first.contains(b.as_str()), "{first}");
    assert!(second.contains(&format!("v1/index.m3u8?hdnts={b}")) && !second.contains(a.as_str()), "{second}");
}

/// A Media CDN dual token signed with HMAC-SHA256 as Google documents it (the hex
/// MAC of the token's fields, `~`-joined), with Python's standard library.
fn media_cdn_dual(fields: &str, key: &str) -> String {
    let script = "import base64,hashlib,hmac,sys\n\
        fields, key = sys.argv[1], base64.urlsafe_b64decode(sys.argv[2])\n\
        print(fields + '~hmac=' + hmac.new(key, fields.encode(), hashlib.sha256).hexdigest())\n";
    let out = Command::new("python3").args(["-c", script, fields, key]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn media_cdn_dual_tokens_play_carry_and_revoke_by_session_id() {
    // The recipe reproduces Google's published HMAC-SHA256 sample.
    assert_eq!(
        media_cdn_dual("PathGlobs=/*~Expires=1663070400", MEDIA_HMAC_KEY),
        "PathGlobs=/*~Expires=1663070400~hmac=9439ecdd5c4919f76f915dea72afa85a045579794e63d8cda664f5a1140c8d93"
    );
    let (_content, origin, edge) = setup("2099-01-01T00:00:00Z");
    let now = now();
    let token = media_cdn_dual(&format!("PathGlobs=/vod/abc/*~Expires={}~SessionID=sess-1", now + 600), MEDIA_HMAC_KEY);
    let master = edge.get(&format!("/vod/abc/master.m3u8?edge-cache-token={token}"), &[]);
    assert_eq!(reason(&master), (200, None), "{}", edge.log());
    let body = String::from_utf8(master.body.clone()).unwrap();
    assert!(body.contains(&format!("\nv1/index.m3u8?edge-cache-token={token}\n")), "{body}");
    let set_cookie = master.header("set-cookie").unwrap();
    assert!(set_cookie.starts_with(&format!("Edge-Cache-Cookie={token}; Path=/vod/abc/; Max-Age=")), "{set_cookie}");
    let by_cookie = edge.get(SEG, &[("Cookie", &format!("Edge-Cache-Cookie={token}"))]);
    assert_eq!(reason(&by_cookie), (200, None));
    ffmpeg_play(&format!("http://127.0.0.1:{}/vod/abc/master.m3u8?edge-cache-token={token}", edge.port), &[])
        .expect("ffmpeg plays the Media-CDN-tokened stream");

    let forged = token.replace("SessionID=sess-1", "SessionID=sess-2");
    let expired =
        media_cdn_dual(&format!("PathGlobs=/vod/abc/*~Expires={}~SessionID=sess-1", now - 60), MEDIA_HMAC_KEY);
    let other_key = media_cdn_dual(&format!("PathGlobs=/vod/abc/*~Expires={}", now + 600), "AAAAAAAAAAAAAAAAAAAAAA==");
    for (target, want) in [
        (format!("{SEG}?edge-cache-token={forged}"), "bad_signature"),
        (format!("{SEG}?edge-cache-token={other_key}"), "bad_signature"),
        (format!("{SEG}?edge-cache-token={expired}"), "expired"),
        (format!("/vod/abd/seg0.ts?edge-cache-token={token}"), "scope"),
        (format!("/vod/abc/%2e%2e/%2e%2e/secret.ts?edge-cache-token={token}"), "malformed"),
    ] {
        assert_eq!(reason(&edge.get(&target, &[])), (403, Some(want)), "{target}");
    }

    // Revocation by `SessionID`, as a subject.
    let revoked = json!([{ "kind": "subject", "value": "sess-1", "issued_before": now + 3600 }]);
    std::fs::write(edge.dir.path().join("state.json"), state(2, revoked)).unwrap();
    eventually("the SessionID revocation takes effect", || {
        reason(&edge.get(&format!("{SEG}?edge-cache-token={token}"), &[])) == (403, Some("revoked"))
    });
    assert!(metric(&edge, r#"stile_edge_foreign_requests_total{format="media-cdn",result="revoked"}"#) >= 1.0);
    let mac = token.rsplit("hmac=").next().unwrap();
    for head in origin.requests() {
        assert!(!head.contains(mac) && !head.to_ascii_lowercase().contains("edge-cache"), "{head}");
    }
    assert!(!edge.log().contains(mac), "the MAC reached the log");
    assert!(edge.log().contains(r#""foreign.id":"sess-1""#));
}

#[test]
fn bad_foreign_configs_and_keys_exit_64_before_binding() {
    let good = state(1, json!([]));
    let mut bad_key: Value = serde_json::from_str(&good).unwrap();
    bad_key["foreign_keys"] = json!([{ "format": "akamai", "name": "primary", "key": "zz-secret-zz" }]);
    for (extra, state_text, needle) in [
        ("[[foreign]]\nformat = \"fastly\"\n", good.clone(), "foreign[0].format"),
        ("[[foreign]]\nformat = \"bunny\"\npath_prefixes = [\"/vod\"]\n", good.clone(), "foreign[0].path_prefixes"),
        ("[[foreign]]\nformat = \"akamai\"\nrefuse_after = \"2027-06-30\"\n", good.clone(), "foreign[0].refuse_after"),
        ("[[foreign]]\nformat = \"bunny\"\n[foreign.akamai]\n", good.clone(), "foreign[0].bunny"),
        ("[[foreign]]\nformat = \"akamai\"\n", bad_key.to_string(), "is not valid hex"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = Edge::write_config(dir.path(), 1, free_port(), free_port(), extra, "", &state_text);
        let out = Command::new(env!("CARGO_BIN_EXE_stile")).args(["edge", "--config"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra}: {stderr}");
        assert!(stderr.contains(needle), "{extra}: {stderr}");
        assert!(!stderr.contains("zz-secret-zz"), "a key is never printed: {stderr}");
    }
}

#[test]
fn bunny_country_and_address_rules_use_the_edges_client_and_geoip() {
    let content = tempfile::tempdir().unwrap();
    make_hls(content.path());
    let origin = Origin::start(content.path());
    let extra = format!(
        "{}\n[client]\ntrusted_hops = 1\ngeoip_db = \"{}/GeoLite2-Country-Test.mmdb\"\n",
        foreign_config("2099-01-01T00:00:00Z"),
        stile_tests::edge::GEOIP_DIR
    );
    let edge = Edge::start(&origin, &extra, &state(1, json!([])));
    const GB: (&str, &str) = ("X-Forwarded-For", "81.2.69.142");
    let now = now();
    let link = |countries: Option<&str>, blocked: Option<&str>, ip: Option<&str>| {
        let claims = stile_foreign::bunny::Claims {
            path: SEG,
            expires: now + 600,
            token_path: Some("/vod/abc/"),
            countries,
            blocked,
            ip: ip.map(|a| a.parse().unwrap()),
            ..Default::default()
        };
        stile_foreign::bunny::sign(BUNNY_KEY.as_bytes(), &claims)
    };
    assert_eq!(reason(&edge.get(&link(Some("GB"), None, None), &[GB])), (200, None), "{}", edge.log());
    assert_eq!(reason(&edge.get(&link(Some("SE,DE"), None, None), &[GB])), (403, Some("geo")));
    assert_eq!(reason(&edge.get(&link(None, Some("GB"), None), &[GB])), (403, Some("geo")));
    assert_eq!(reason(&edge.get(&link(Some("GB"), None, Some("81.2.69.142")), &[GB])), (200, None));
    // Bunny binds the address inside the MAC only: another address is `bad_signature`.
    let other = ("X-Forwarded-For", "203.0.113.7");
    assert_eq!(reason(&edge.get(&link(None, None, Some("81.2.69.142")), &[other])), (403, Some("bad_signature")));
}
