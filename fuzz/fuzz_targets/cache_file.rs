//! The edge cache's disk-tier file format on arbitrary bytes: decoding never
//! panics, and a file it accepts encodes back to exactly the same bytes (every
//! byte of an accepted file is covered by a check: the magic, bounded lengths,
//! the head's CRC, each body block's CRC, the headers block's own framing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::cache::reencode_disk_file;

fuzz_target!(|data: &[u8]| {
    if let Ok(again) = reencode_disk_file(data) {
        assert_eq!(again, data, "an accepted file has one encoding");
    }
});
