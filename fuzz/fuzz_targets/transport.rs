//! Token location in a request target and its cookies (query, path prefix,
//! cookie parsing): never panics; a token is found exactly when a transport is
//! named; the path is the target's up to the query, less a path token; the
//! query holds the token parameter exactly when it says so; and the upstream
//! target built from whatever is found never carries the token parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::transport::{Transport, TransportNames, locate, strip_cookie, upstream_target};

fuzz_target!(|data: &[u8]| {
    // First line: the request target; the rest: one Cookie header per line.
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let cookies: Vec<&[u8]> = lines.collect();
    let names = TransportNames { path_prefix: "/_st/".into(), query_param: "st".into(), cookie: Some("stile".into()) };
    if let Ok(found) = locate(target, cookies.iter().copied(), &names) {
        assert_eq!(found.token.is_some(), found.transport != Transport::None, "{found:?}");
        let before_query = target.split(|&b| b == b'?').next().unwrap_or_default();
        let path = match (found.transport, found.token) {
            // `/_st/<token>/…`: the token is the segment after the prefix, the path what follows it.
            (Transport::Path, Some(token)) => {
                assert!(before_query.starts_with(format!("{}{token}/", names.path_prefix).as_bytes()));
                &before_query[names.path_prefix.len() + token.len()..]
            }
            _ => before_query,
        };
        assert_eq!(found.path, path, "the path is not the target's");
        assert_eq!(found.query_has_token, found.query.is_some_and(|q| has_param(q, b"st")));
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

/// Whether the query has a parameter named `name`.
fn has_param(query: &[u8], name: &[u8]) -> bool {
    query.split(|&b| b == b'&').any(|pair| pair.split(|&b| b == b'=').next() == Some(name))
}
