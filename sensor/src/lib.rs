//! The `sensor` daemon as a library (sources -> correlator -> store -> outputs, the control API), so
//! that tests and benches reach its parts. The CLI is the binary's (`main.rs`, `cli/`); the kernel
//! side and network ingest are the `sensor-kernel` and `ingest` crates.

pub mod api;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod outputs;
pub mod rules;
pub mod store;
