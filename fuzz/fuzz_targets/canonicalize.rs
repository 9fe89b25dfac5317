//! Path canonicalisation on arbitrary bytes: never panics, is idempotent, and
//! never lets a separator, dot segment or double encoding through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stile_token::canonicalize_path;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = canonicalize_path(data) {
        assert_eq!(canonicalize_path(c.as_bytes()).as_deref(), Ok(c.as_ref()));
        assert!(c.starts_with('/'));
        assert!(!c.contains("//") && !c.contains("/./") && !c.contains("/../"));
        assert!(!c.ends_with("/.") && !c.ends_with("/.."));
        let lower = c.to_ascii_lowercase();
        for bad in ["%2f", "%5c", "%25", "%00", "%3b", ";", "\\"] {
            assert!(!lower.contains(bad));
        }
        assert!(c.len() <= stile_token::MAX_PATH_LEN);
        // No raw byte an HTTP parser refuses or re-encodes; every escape upper case.
        assert!(c.bytes().all(|b| (0x21..=0x7e).contains(&b) && !b"<>`#?\\;".contains(&b)));
        // No segment a trimming or decoding origin could turn into `..`.
        for seg in c.split('/').skip(1) {
            let head = seg.split("%3F").next().unwrap_or("").split("%23").next().unwrap_or("");
            assert!(head != "." && head != "..", "{c}");
            for part in [head, seg] {
                assert!(!part.ends_with('.') && !part.ends_with("%20"), "{c}");
            }
        }
    }
});
