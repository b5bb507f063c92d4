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
/// Secret files (tokens, TLS keys): the ingest crate's, shared by the daemon and the CLI.
pub use ingest::secret;
pub mod store;
