//! The drift check: regenerates the prost/tonic code from `proto/` into a
//! temporary directory and compares it with the committed `src/gen/`.
//!
//! `STILE_BLESS=1 cargo nextest run -p stile-proto` rewrites `src/gen/` instead
//! of failing. Needs `protoc` on `PATH` (or `PROTOC`).

use std::fs;
use std::path::{Path, PathBuf};

/// The generated files, relative to the output directory.
const FILES: [&str; 2] = ["stile.v1.rs", "stile_descriptor.bin"];

#[test]
fn generated_code_matches_proto() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let committed = crate_dir.join("src/gen");
    let tmp = tempfile::tempdir().expect("temp dir");
    generate(&crate_dir.join("../../proto"), tmp.path());

    let bless = std::env::var_os("STILE_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for name in FILES {
        let fresh = fs::read(tmp.path().join(name)).expect("generated file");
        let path = committed.join(name);
        if fs::read(&path).ok().as_deref() != Some(fresh.as_slice()) {
            if bless {
                fs::write(&path, &fresh).expect("write generated file");
            }
            stale.push(path);
        }
    }
    assert!(
        bless || stale.is_empty(),
        "generated code is out of date with proto/: {stale:?}\n\
         regenerate with `STILE_BLESS=1 cargo nextest run -p stile-proto` and commit src/gen/"
    );
}

fn generate(proto_root: &Path, out: &Path) {
    let protos: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(proto_root.join("stile/v1"))
            .expect("proto/stile/v1")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "proto"))
            .collect();
        v.sort();
        v
    };
    tonic_prost_build::configure()
        .out_dir(out)
        .file_descriptor_set_path(out.join("stile_descriptor.bin"))
        .emit_rerun_if_changed(false)
        // A snapshot chunk's packed token ids: `Bytes`, so the control plane
        // sends one built chunk to every edge without copying it.
        .bytes(".stile.v1.SnapshotChunk.token_ids")
        .compile_protos(&protos, &[proto_root.to_path_buf()])
        .expect("protoc failed: is protoc installed (apt-get install protobuf-compiler)?");
}
