//! Akamai EdgeAuth token location and verification on arbitrary requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_foreign::{Config, akamai};

#[path = "foreign_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let escaped = akamai::Config {
        token_name: "hdnts".into(),
        escape_early: true,
        ignore_query_string: false,
        salt: Some("s".into()),
        ..akamai::Config::default()
    };
    common::run(&[Config::Akamai(akamai::Config::default()), Config::Akamai(escaped)], data);
});
