//! The sync client's binary cache (`state.file` with `[sync]`,
//! `crates/edge/src/sync/image.rs`) on arbitrary bytes: decoding never
//! panics, allocates only what the input holds (every length is checked
//! against the file's before anything is read), and a file it accepts holds a
//! model that writes back and reads again to the same model.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::sync::decode_cache_image;

fuzz_target!(|data: &[u8]| {
    if let Ok((model, generated_at)) = decode_cache_image(data) {
        let again = model.to_image(generated_at).encode();
        let (back, at) = decode_cache_image(&again).expect("a cache written from a model reads back");
        assert_eq!((back, at), (model, generated_at), "the model survives a write and a read");
    }
});
