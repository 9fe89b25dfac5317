//! nginx secure_link and secure_link_secret on arbitrary requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_foreign::{Config, Format, nginx};

#[path = "foreign_common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let custom = nginx::Config::SecureLink {
        md5_arg: "h".into(),
        expires_arg: None,
        expression: "$uri$arg_u$host${remote_addr}$secret".into(),
    };
    let secret = nginx::Config::SecureLinkSecret { location: "/p/".into(), rewrite_to: "/secure/".into() };
    common::run(
        &[
            Config::default_for(Format::NginxSecureLink),
            Config::NginxSecureLink(custom),
            Config::NginxSecureLink(secret),
        ],
        data,
    );
});
