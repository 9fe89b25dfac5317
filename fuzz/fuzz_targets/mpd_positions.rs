//! The DASH segment-position reader (`stile_edge::mpd_positions`) on arbitrary bytes:
//! never panics, returns at most its limit of segments, each a canonical path ending
//! within the presentation's total duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::mpd_positions::segment_ends;

fuzz_target!(|data: &[u8]| {
    if let Some((ends, total)) = segment_ends("/vod/abc/dash/manifest.mpd", data, 64) {
        assert!(ends.len() <= 64, "past the limit");
        for (path, end) in &ends {
            assert!(stile_token::is_canonical(path), "not canonical: {path:?}");
            assert!(*end <= total, "a segment ends after the total");
        }
    }
});
