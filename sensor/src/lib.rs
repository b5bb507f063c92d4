//! The `sensor` daemon and CLI as a library, so that tests, benches and fuzz targets reach its parts.

pub mod cli;
pub mod ingest;
