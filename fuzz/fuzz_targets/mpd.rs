//! The DASH MPD rewriter on arbitrary bytes: never panics, is idempotent (a
//! rewritten MPD is left as it is), and adds the token only where a URL sits (an
//! attribute value or an element's text).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::mpd::rewrite;

const TOKEN: &str = "AQAAAAEBI0VniavN7wAAAABpVbjEAAAOTAkvdm9kL2FiYy8";

fuzz_target!(|data: &[u8]| {
    let out = rewrite(data, "st", TOKEN, Some("edge.example"), "cdn=1");
    assert_eq!(rewrite(&out, "st", TOKEN, Some("edge.example"), "cdn=1"), out, "not idempotent");
    if !data.contains(&b'<') {
        assert_eq!(out, data, "no markup, no change");
    }
    let count = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).filter(|w| *w == needle).count();
    let places = count(data, b"=") + count(data, b">");
    assert!(count(&out, TOKEN.as_bytes()) <= count(data, TOKEN.as_bytes()) + places, "token outside a URL place");
});
