//! Shared driver of the foreign-format fuzz targets: the input is a request
//! target and a `Cookie` header (split at the first NUL); every format's
//! `locate` and `verify` must never panic, and what `locate` returns must be
//! canonical with an upstream target starting with that path.

use stile_foreign::{Config, Key, Keys, Request};

pub fn run(configs: &[Config], data: &[u8]) {
    let (target, cookie) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let keys = Keys::new(vec![
        Key::secret("my-key", b"0123456789abcdef").expect("key"),
        Key::ed25519_public(
            "ed",
            &[
                0x9f, 0xb9, 0xf0, 0xbe, 0x1c, 0xda, 0xd7, 0x50, 0xb4, 0x4a, 0xe5, 0x3d, 0x6b, 0x2d, 0x6e, 0x5a, 0x30,
                0xd2, 0x7f, 0x31, 0xfe, 0x0a, 0x92, 0x01, 0x81, 0x7c, 0x6a, 0x23, 0x3f, 0x98, 0x77, 0xd4,
            ],
        )
        .expect("key"),
    ])
    .expect("keys");
    let headers: [(&str, &[u8]); 1] = [("foo", b"bar")];
    let mut req = Request::new("https", "media.example.com", 1_700_000_000);
    req.client_ip = Some("203.0.113.9".parse().expect("ip"));
    req.headers = &headers;
    let cookies: [&[u8]; 1] = [cookie];
    for cfg in configs {
        if let Ok(Some(found)) = cfg.locate(target, &cookies) {
            assert!(stile_token::is_canonical(&found.path));
            assert!(found.upstream.starts_with(&found.path));
            let _ = found.fields();
            if let Ok(v) = cfg.verify(&found, &keys, &req) {
                assert!(
                    v.scope.admits(req.scheme, req.host, &found.path)
                        || matches!(v.scope, stile_foreign::Scope::UrlPrefix(_))
                );
            }
        }
    }
}
