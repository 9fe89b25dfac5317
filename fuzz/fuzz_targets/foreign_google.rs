//! Google Cloud CDN and Media CDN (signed URLs, prefixes, cookies, path
//! components, dual tokens) on arbitrary requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_foreign::{Config, Format};

#[path = "foreign_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::run(&[Config::default_for(Format::CloudCdn), Config::default_for(Format::MediaCdn)], data);
});
