//! Tokens from Akamai's own generator: the PyPI `akamai-edgeauth` package run by
//! `tests/python/akamai_edgeauth_tokens.py` (`pip install -r tests/python/requirements.txt`).

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs the generator on `cases` (a JSON array; each case is EdgeAuth's keyword
/// arguments under `opts` and an `acl` string or list, or a `url`) and returns its
/// tokens in order. Panics (never skips) if python3 or the package is missing.
pub fn vendor_tokens(cases: &serde_json::Value) -> Vec<String> {
    let mut child = Command::new("python3")
        .arg(crate::repo_root().join("tests/python/akamai_edgeauth_tokens.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/install-deps)");
    child.stdin.take().unwrap().write_all(cases.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Akamai's generator failed (pip install -r tests/python/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
