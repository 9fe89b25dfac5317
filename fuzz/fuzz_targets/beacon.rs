//! Player beacon bodies (`stile_edge::beacon::parse`): never panics; whatever it
//! accepts stays within the documented bounds and names an error from the closed
//! set; a body over the size cap is always refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_edge::beacon::{BeaconError, ERRORS, MAX_BODY, MAX_REBUFFER_MS, MAX_REBUFFERS, MAX_STARTUP_MS, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(b) => {
            assert!(data.len() <= MAX_BODY);
            assert!(b.startup_ms.is_none_or(|ms| ms <= MAX_STARTUP_MS), "{b:?}");
            assert!(b.rebuffers <= MAX_REBUFFERS && b.rebuffer_ms <= MAX_REBUFFER_MS, "{b:?}");
            assert!(b.error.is_none_or(|i| i < ERRORS.len()), "{b:?}");
        }
        Err(e) => assert_eq!(data.len() > MAX_BODY, e == BeaconError::TooLarge, "{e:?}"),
    }
});
