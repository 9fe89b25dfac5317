//! Hostile input: arbitrary targets and cookies never panic, and whatever a
//! format admits has a canonical path and an upstream target without the
//! format's token.

use proptest::prelude::*;
use stile_foreign::{Config, Format, Key, Keys, Request, nginx};

fn configs() -> Vec<Config> {
    let mut v: Vec<Config> = Format::ALL.into_iter().map(Config::default_for).collect();
    v.push(Config::NginxSecureLink(nginx::Config::SecureLinkSecret {
        location: "/p/".into(),
        rewrite_to: "/s/".into(),
    }));
    v
}

fn keys() -> Keys {
    Keys::new(vec![
        Key::secret("k", b"secret").unwrap(),
        Key::ed25519_public(
            "e",
            &[
                0x9f, 0xb9, 0xf0, 0xbe, 0x1c, 0xda, 0xd7, 0x50, 0xb4, 0x4a, 0xe5, 0x3d, 0x6b, 0x2d, 0x6e, 0x5a, 0x30,
                0xd2, 0x7f, 0x31, 0xfe, 0x0a, 0x92, 0x01, 0x81, 0x7c, 0x6a, 0x23, 0x3f, 0x98, 0x77, 0xd4,
            ],
        )
        .unwrap(),
    ])
    .unwrap()
}

/// Targets built from the pieces the parsers look for, so the search reaches deep.
fn target() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/",
        "?",
        "&",
        "=",
        "~",
        "!",
        ":",
        "%",
        "%2f",
        "%2e",
        "..",
        "*",
        "__token__=",
        "hdnts=",
        "exp=1",
        "st=2",
        "acl=/*",
        "hmac=",
        "ip=1.2.3.4",
        "Expires=1",
        "KeyName=k",
        "Signature=AAAA",
        "URLPrefix=aHR0cDovL2gv",
        "edge-cache-token=",
        "PathGlobs=/*",
        "FullPath",
        "Headers=a",
        "IPRanges=MTAuMC4wLjAvOA",
        "token=HS256-",
        "HS256-1-",
        "bcdn_token=",
        "expires=9",
        "token_path=%2F",
        "md5=",
        "p/",
        "0123456789abcdef0123456789abcdef",
        "a",
        "b.ts",
        "\u{e9}",
        " ",
    ]);
    prop::collection::vec(piece, 0..24).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_never_leaks(t in target(), c in target()) {
        let keys = keys();
        let cookie = format!("Cloud-CDN-Cookie={c}; Edge-Cache-Cookie={c}; __token__={c}");
        let cookies: [&[u8]; 1] = [cookie.as_bytes()];
        let req = Request::new("http", "h", 5);
        for cfg in configs() {
            if let Ok(Some(found)) = cfg.locate(t.as_bytes(), &cookies) {
                prop_assert!(stile_token::is_canonical(&found.path));
                prop_assert!(found.upstream.starts_with(&found.path));
                let _ = found.fields();
                let _ = cfg.verify(&found, &keys, &req);
            }
        }
    }
}
