//! Bunny token authentication (query and path forms) on arbitrary requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_foreign::{Config, bunny};

#[path = "foreign_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let ipv = bunny::Config { ip_validation: true, ..bunny::Config::default() };
    common::run(&[Config::Bunny(bunny::Config::default()), Config::Bunny(ipv)], data);
});
