//! The HLS playlist rewriter on arbitrary bytes: never panics, keeps every
//! line (and line ending), and grows the playlist by at most one token per line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::playlist::rewrite;

const TOKEN: &str = "AQAAAAEBI0VniavN7wAAAABpVbjEAAAOTAkvdm9kL2FiYy8";

fuzz_target!(|data: &[u8]| {
    let out = rewrite(data, "st", TOKEN, Some("edge.example"));
    let newlines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    assert_eq!(newlines(&out), newlines(data), "line count changed");
    let lines = newlines(data) + 1;
    // Each line carries at most one URI (a URI line or one URI attribute).
    let per_insert = "&st=".len() + TOKEN.len();
    assert!(out.len() <= data.len() + lines * per_insert, "grew by more than one token per line");
    assert!(out.len() >= data.len(), "rewriting removed bytes");
});
