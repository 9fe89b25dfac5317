//! The fleet simulator (`stile-bench-fleet`, `scripts/bench-fleet`): many
//! edges' real sync clients in one process ([`sim`]), each behind its own
//! shaping relay ([`relay`]), against real `stile control` processes
//! ([`crate::procs`]); CPU and memory read from `/proc` ([`procfs`]).

pub mod procfs;
pub mod relay;
pub mod sim;
