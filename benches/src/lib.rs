//! Shared fixtures for the benchmarks (see `benches/`).
