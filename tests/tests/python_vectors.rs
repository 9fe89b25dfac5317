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
    assert!(stdout.lines().any(|l| l.ends_with(", 0 failed")), "unexpected output:\n{stdout}");
}
