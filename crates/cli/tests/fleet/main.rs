//! End-to-end tests of a fleet: a `stile control` process (redb or Redis, plain
//! or TLS) and `stile edge` processes following it over the sync stream —
//! revocations, restarts and failovers, faults under load (SIGKILL of edges,
//! control plane and Redis, a cut sync connection, clock jumps, a full disk),
//! Redis replicas, push-path trust, gRPC over TLS, purges. One test
//! binary; each module is one former `tests/<module>.rs` file, its tests named
//! `<module>::<test>`. The modules that measure convergence run one at a time
//! (the `heavy` group of .config/nextest.toml). Support: the `stile-tests`
//! crate's `fleet` module (tests/support/fleet.rs).

mod control_tls;
mod edge_cache_purge;
mod edge_purge;
mod edges_ls;
mod faults;
mod push_trust;
mod redis_replicas;
mod sync_ed25519;
mod sync_failover;
mod sync_foreign;
mod sync_restart;
mod sync_revoke;
