//! End to end: a table of path-encoding attacks, each sent raw with a valid token
//! scoped to `/vod/abc/` in every transport, all denied before reaching the origin.

use stile_tests::edge::*;
use stile_tests::net::*;
use stile_tests::token::*;

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

    let attacks = PATH_ATTACKS;
    for attack in attacks {
        let cookie = format!("stile={token}");
        let sep = if attack.contains('?') { '&' } else { '?' };
        for (transport, target, headers) in [
            ("query", format!("{attack}{sep}st={token}"), vec![]),
            ("path", format!("/_st/{token}{attack}"), vec![]),
            ("cookie", attack.to_string(), vec![("Cookie", cookie.as_str())]),
        ] {
            // Every attack gets the edge's own answer: 403 `malformed` (a line Pingora's parser
            // had to re-encode would be 400 `malformed`; none of these needs it).
            let r = get(edge.port, &target, &headers).unwrap_or_else(|| panic!("{attack} via {transport}: no answer"));
            assert_eq!(r.status, 403, "{attack} via {transport}: {:?}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.header("x-stile-reason"), Some("malformed"), "{attack} via {transport}");
        }
        // The edge is alive after each attack: a normal viewer is served.
        let ok = edge.get(&format!("/vod/abc/seg.ts?st={token}"), &[]);
        assert_eq!(ok.status, 200, "the edge stopped serving after {attack}");
    }
    let after = origin.request_lines();
    let reached: Vec<_> = after[before..].iter().filter(|l| *l != "GET /vod/abc/seg.ts HTTP/1.1").collect();
    assert!(reached.is_empty(), "attacks reached the origin: {reached:#?}");
    assert_eq!(after.len() - before, attacks.len(), "one viewer request per attack reached the origin");
}
