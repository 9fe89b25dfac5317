//! Runs the independent Python verifier (standard library only, written from
//! `docs/token-format.md` alone) over `docs/token-vectors.json`.

use std::process::Command;

#[test]
fn python_verifier_accepts_every_vector() {
    let root = stile_tests::repo_root();
    let out = Command::new("python3")
        .arg(root.join("tests/python/verify_vectors.py"))
        .arg(root.join("docs/token-vectors.json"))
        .output()
        .expect("python3 must be installed to run the cross-language vector check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python verifier failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The last line is "N passed, 0 failed"; N is every vector and path case (at least 180).
    let passed: usize = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output:\n{stdout}"));
    assert!(passed >= 180, "only {passed} cases checked:\n{stdout}");
}
