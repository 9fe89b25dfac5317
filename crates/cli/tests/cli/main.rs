//! End-to-end tests of the `stile` binary's own commands: the README's tour on
//! `stile dev` (plain and `--tls`), the client commands' exit codes and JSON,
//! and a scan of every log line for secrets. One test binary; each module is
//! one former `tests/<module>.rs` file, its tests named `<module>::<test>`.
//! The browser playback tests stay in their own binary (tests/browser.rs): they
//! run one at a time and need Node and Chromium. Support: the `stile-tests` crate.

mod cli_client;
mod dev_tls;
mod dev_tour;
mod log_scan;
