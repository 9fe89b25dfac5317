//! Token location in a request target and its cookies (query, path prefix,
//! cookie parsing): never panics, and the upstream target built from whatever
//! is found never carries the token parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::transport::{TransportNames, locate, strip_cookie, upstream_target};

fuzz_target!(|data: &[u8]| {
    // First line: the request target; the rest: one Cookie header per line.
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let cookies: Vec<&[u8]> = lines.collect();
    let names = TransportNames {
        path_prefix: "/_st/".into(),
        query_param: "st".into(),
        cookie: Some("stile".into()),
    };
    if let Ok(found) = locate(target, cookies.iter().copied(), &names) {
        if let Some(token) = found.token {
            assert!(!token.is_empty() || found.transport != stile_edge::transport::Transport::None);
        }
        let up = upstream_target("/canonical/path", found.query, &names.query_param);
        if let Some(q) = up.splitn(2, |&b| b == b'?').nth(1) {
            for pair in q.split(|&b| b == b'&') {
                let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
                assert_ne!(name, b"st", "token parameter left in the upstream query");
            }
        }
    }
    for header in &cookies {
        if let Some(stripped) = strip_cookie(header, "stile") {
            assert!(strip_cookie(&stripped, "stile").is_none(), "cookie left after stripping");
        }
    }
});
