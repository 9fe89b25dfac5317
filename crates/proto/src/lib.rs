//! # stile-proto
//!
//! The `stile.v1` gRPC API: prost messages and tonic clients and servers,
//! generated from `proto/stile/v1/*.proto` at the workspace root.
//!
//! The generated code is committed under `src/gen/` so ordinary builds need no
//! `protoc`. `tests/codegen.rs` regenerates it into a temporary directory and
//! fails when it differs from the committed files (the drift check); run it
//! with `STILE_BLESS=1` to rewrite them after editing a `.proto` file.

/// Package `stile.v1`.
#[allow(clippy::all, clippy::pedantic, unreachable_pub, missing_debug_implementations)] // reason: generated code.
pub mod v1 {
    include!("gen/stile.v1.rs");
}

/// Encoded `FileDescriptorSet` of every `stile.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/stile_descriptor.bin");
