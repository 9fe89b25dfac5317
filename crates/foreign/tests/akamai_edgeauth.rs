//! Akamai EdgeAuth against Akamai's own generator: the `akamai-edgeauth`
//! package from PyPI (installed by scripts/install-deps from
//! tests/python/requirements.txt), run through tests/python/akamai_edgeauth_tokens.py.
//!
//! For each case the vendor's token must equal ours byte for byte, verify in
//! every location the format allows, and fail with the right reason when
//! changed, expired, used early, out of scope or from another address.

use serde_json::{Value, json};
use stile_foreign::akamai::{self, Claims};
use stile_foreign::{Config, Hash, Key, KeyEncoding, Keys, Reason, Request};
use stile_tests::akamai::vendor_tokens;

const KEY: &str = "52a152a152a152a152a152a152a1";
const OTHER_KEY: &str = "0badc0ffee0badc0ffee";

struct Case {
    cfg: akamai::Config,
    claims: Claims<'static>,
    acl_list: Option<Vec<&'static str>>,
    /// A request target the token must admit, and one it must not.
    admits: &'static str,
    refuses: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let base = akamai::Config::default();
    vec![
        Case {
            cfg: base.clone(),
            claims: Claims { start: Some(1000), expires: 2000, acl: Some("/vod/abc/*"), ..Default::default() },
            acl_list: None,
            admits: "/vod/abc/720p/seg_1.ts",
            refuses: Some("/vod/abd/x.ts"),
        },
        Case {
            cfg: akamai::Config { token_name: "hdnts".into(), escape_early: true, ..base.clone() },
            claims: Claims {
                ip: Some("203.0.113.9"),
                start: Some(1000),
                expires: 2000,
                acl: Some("/vod/*!/live/ch?/*"),
                id: Some("session 42"),
                data: Some("viewer=7&plan=gold"),
                ..Default::default()
            },
            acl_list: Some(vec!["/vod/*", "/live/ch?/*"]),
            admits: "/live/ch1/seg.ts",
            refuses: Some("/live/ch12/seg.ts"),
        },
        Case {
            cfg: base.clone(),
            claims: Claims { start: Some(1000), expires: 2000, url: Some("/vod/a.ts"), ..Default::default() },
            acl_list: None,
            admits: "/vod/a.ts",
            refuses: None,
        },
        Case {
            cfg: akamai::Config { escape_early: true, ..base.clone() },
            claims: Claims { start: Some(1000), expires: 2000, url: Some("/vod/my clip.ts"), ..Default::default() },
            acl_list: None,
            admits: "/vod/my%20clip.ts",
            refuses: None,
        },
        Case {
            cfg: akamai::Config { algorithm: Hash::Sha1, ..base.clone() },
            claims: Claims { expires: 2000, acl: Some("/*"), ..Default::default() },
            acl_list: None,
            admits: "/anything/at/all.m3u8",
            refuses: None,
        },
        Case {
            cfg: akamai::Config { algorithm: Hash::Md5, salt: Some("pepper".into()), ..base.clone() },
            claims: Claims { start: Some(1000), expires: 2000, acl: Some("/vod/*"), ..Default::default() },
            acl_list: None,
            admits: "/vod/x/y.ts",
            refuses: Some("/live/x.ts"),
        },
        Case {
            cfg: akamai::Config { field_delimiter: ',', acl_delimiter: '|', ..base.clone() },
            claims: Claims {
                start: Some(1000),
                expires: 2000,
                acl: Some("/a/*|/b/*"),
                id: Some("x1"),
                ..Default::default()
            },
            acl_list: Some(vec!["/a/*", "/b/*"]),
            admits: "/b/c.ts",
            refuses: Some("/c/c.ts"),
        },
    ]
}

fn request(now: u64) -> Request<'static> {
    let mut r = Request::new("https", "media.example.com", now);
    r.client_ip = Some("203.0.113.9".parse().unwrap());
    r
}

fn verify(cfg: &Config, keys: &Keys, target: &str, cookie: Option<&str>, req: &Request<'_>) -> Result<String, Reason> {
    let cookies: Vec<&[u8]> = cookie.map(str::as_bytes).into_iter().collect();
    let found = cfg.locate(target.as_bytes(), &cookies)?.ok_or(Reason::Missing)?;
    cfg.verify(&found, keys, req).map(|v| v.key_name.to_owned())
}

#[test]
fn tokens_match_akamais_generator_and_verify() {
    let cases = cases();
    let json_cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut opts = json!({
                "key": KEY,
                "token_name": c.cfg.token_name,
                "algorithm": c.cfg.algorithm.as_str(),
                "field_delimiter": c.cfg.field_delimiter.to_string(),
                "acl_delimiter": c.cfg.acl_delimiter.to_string(),
                "escape_early": c.cfg.escape_early,
                "end_time": c.claims.expires,
            });
            let o = opts.as_object_mut().unwrap();
            for (k, v) in [("ip", c.claims.ip), ("session_id", c.claims.id), ("payload", c.claims.data)] {
                if let Some(v) = v {
                    o.insert(k.into(), json!(v));
                }
            }
            if let Some(st) = c.claims.start {
                o.insert("start_time".into(), json!(st));
            }
            if let Some(salt) = &c.cfg.salt {
                o.insert("salt".into(), json!(salt));
            }
            match (c.claims.acl, &c.acl_list, c.claims.url) {
                (_, Some(list), _) => json!({"opts": opts, "acl": list}),
                (Some(acl), None, _) => json!({"opts": opts, "acl": acl}),
                (None, None, url) => json!({"opts": opts, "url": url.unwrap()}),
            }
        })
        .collect();
    let theirs = vendor_tokens(&Value::Array(json_cases));
    assert_eq!(theirs.len(), cases.len());

    // The verifier holds the transition key first: the primary must still be found.
    let keys = Keys::new(vec![
        Key::parse_secret("transition", OTHER_KEY, KeyEncoding::Hex).unwrap(),
        Key::parse_secret("primary", KEY, KeyEncoding::Hex).unwrap(),
    ])
    .unwrap();
    let primary = keys.get(b"primary").unwrap();
    for (c, token) in cases.iter().zip(&theirs) {
        let ours = akamai::sign(&c.cfg, primary, &c.claims).unwrap();
        assert_eq!(&ours, token, "byte for byte");
        let cfg = Config::Akamai(c.cfg.clone());
        cfg.validate().unwrap();
        let name = &c.cfg.token_name;
        let q = format!("{}?{name}={token}", c.admits);
        let req = request(1500);
        assert_eq!(verify(&cfg, &keys, &q, None, &req), Ok("primary".into()), "{token}");
        let cookie = format!("other=1; {name}={token}");
        assert_eq!(verify(&cfg, &keys, c.admits, Some(&cookie), &req), Ok("primary".into()), "{token}");
        if c.claims.acl.is_some() && !token.contains('/') {
            // "Token in URI": only for tokens without raw slashes.
            let seg = format!("/{name}={token}{}", c.admits);
            assert_eq!(verify(&cfg, &keys, &seg, None, &req), Ok("primary".into()), "{token}");
        }
        if let Some(bad) = c.refuses {
            let want = if c.claims.url.is_some() { Reason::BadSignature } else { Reason::Scope };
            assert_eq!(verify(&cfg, &keys, &format!("{bad}?{name}={token}"), None, &req), Err(want), "{token}");
        }
        assert_eq!(verify(&cfg, &keys, &q, None, &request(2000)), Err(Reason::Expired), "{token}");
        if c.claims.start.is_some() {
            assert_eq!(verify(&cfg, &keys, &q, None, &request(999)), Err(Reason::NotYetValid), "{token}");
        }
        if c.claims.ip.is_some() {
            let mut elsewhere = request(1500);
            elsewhere.client_ip = Some("198.51.100.1".parse().unwrap());
            assert_eq!(verify(&cfg, &keys, &q, None, &elsewhere), Err(Reason::Ip), "{token}");
        }
        let d = c.cfg.field_delimiter;
        let changed =
            token.replacen(&format!("exp=2000{d}"), &format!("exp=2001{d}"), 1).replacen("exp=2000", "exp=2001", 1);
        assert_eq!(
            verify(&cfg, &keys, &format!("{}?{name}={changed}", c.admits), None, &req),
            Err(Reason::BadSignature)
        );
        let only_other =
            Keys::new(vec![Key::parse_secret("transition", OTHER_KEY, KeyEncoding::Hex).unwrap()]).unwrap();
        assert_eq!(verify(&cfg, &only_other, &q, None, &req), Err(Reason::BadSignature));
    }
}
