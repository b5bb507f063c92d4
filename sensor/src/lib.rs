//! The `sensor` daemon and CLI as a library, so that tests, benches and fuzz targets reach its parts.

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod ingest;
pub mod kernel;
pub mod metrics;
pub mod outputs;
pub mod secret;
pub mod store;
