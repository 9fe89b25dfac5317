//! End to end: a table of path-encoding attacks, each sent raw with a valid token
//! scoped to `/vod/abc/` in every transport, all denied before reaching the origin.

mod support;

use support::*;

#[test]
fn path_attacks_are_denied_and_never_reach_the_origin() {
    let content = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(content.path().join("vod/abc")).unwrap();
    std::fs::write(content.path().join("vod/abc/seg.ts"), b"ok").unwrap();
    std::fs::write(content.path().join("secret.ts"), b"secret").unwrap();
    let origin = Origin::start(content.path());
    let edge = Edge::start(&origin, BASE_CONFIG, &state_json(1, serde_json::json!([]), None));
    let token = mint(|_| {});

    // Sanity: the plain path is admitted.
    assert_eq!(edge.get(&format!("/vod/abc/seg.ts?st={token}"), &[]).status, 200);
    let before = origin.request_lines().len();

    let attacks = [
        "/vod/abc/../../secret.ts",
        "/vod/abc/%2e%2e/%2e%2e/secret.ts",
        "/vod/abc/%2E%2E/%2E%2E/secret.ts",
        "/vod/abc/.%2e/.%2e/secret.ts",
        "/vod/abc/..%2f..%2fsecret.ts",
        "/vod/abc/%2e%2e%2f%2e%2e%2fsecret.ts",
        "/vod/abc/%252e%252e/%252e%252e/secret.ts",
        "/vod/abc/%25252e%25252e/secret.ts",
        "/vod/abc/..%5c..%5csecret.ts",
        "/vod/abc/..\\..\\secret.ts",
        "/vod/abc\\..\\..\\secret.ts",
        "/vod/abc/seg.ts;jsessionid=x",
        "/vod/abc/..;/..;/secret.ts",
        "/vod/abc/%3b/seg.ts",
        "/vod/abc//seg.ts",
        "//vod/abc/seg.ts",
        "/vod/abc/./seg.ts",
        "/vod/abc/%2fseg.ts",
        "/vod/abc/seg.ts%00",
        "/vod/abc/%c0%ae%c0%ae/secret.ts",
        "/vod/abc/%e0%80%ae%e0%80%ae/secret.ts",
        "/vod/abc/%ef%bc%8f..%ef%bc%8fsecret.ts",
        "/vod/abc/%ff/seg.ts",
        "/vod/abc/%",
        "/vod/abc/%zz",
    ];
    for attack in attacks {
        let cookie = format!("stile={token}");
        let sep = if attack.contains('?') { '&' } else { '?' };
        for (transport, target, headers) in [
            ("query", format!("{attack}{sep}st={token}"), vec![]),
            ("path", format!("/_st/{token}{attack}"), vec![]),
            ("cookie", attack.to_string(), vec![("Cookie", cookie.as_str())]),
        ] {
            // Pingora's HTTP parser may refuse some raw bytes itself (400); everything it
            // lets through is ours to refuse as `malformed`.
            match get(edge.port, &target, &headers) {
                None => {}
                Some(r) if r.status == 400 => {}
                Some(r) => {
                    assert_eq!(r.status, 403, "{attack} via {transport}: {:?}", String::from_utf8_lossy(&r.body));
                    assert_eq!(r.header("x-stile-reason"), Some("malformed"), "{attack} via {transport}");
                }
            }
        }
    }
    let after = origin.request_lines();
    assert_eq!(after.len(), before, "attacks reached the origin: {:#?}", &after[before..]);
}
