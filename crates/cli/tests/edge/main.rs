//! End-to-end tests of one `stile edge` process (no control plane): its
//! configuration and lifecycle, every token transport and reason code, HLS and
//! DASH playback through ffmpeg, hostile paths and requests, CORS, TLS and
//! HTTP/2, origin pools, the cache, other vendors' links. One test binary (one
//! link of the whole workspace) for all of them; each module is one former
//! `tests/<module>.rs` file, its tests named `<module>::<test>`. Support:
//! the `stile-tests` crate (tests/support).

mod edge_audit;
mod edge_beacons;
mod edge_cache;
mod edge_cors;
mod edge_dash;
mod edge_fast_path;
mod edge_foreign;
mod edge_hls;
mod edge_hostile;
mod edge_lifecycle;
mod edge_origins;
mod edge_outcomes;
mod edge_paths;
mod edge_sessions;
mod edge_tls;
mod edge_validation;
