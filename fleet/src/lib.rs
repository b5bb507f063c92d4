//! The fleet: many hosts, one alert state.
//!
//! - [`config`]: the `[fleet]` section (role, bus, PostgreSQL, partitions);
//! - [`pg`]: the fleet alert store in PostgreSQL (same alert model as the SQLite store, plus a
//!   uniqueness key so that a redelivered event never makes a second alert);
//! - [`bus`]: the connection to NATS JetStream and the streams the fleet uses;
//! - [`edge`]: an edge's publisher, which drains a durable local spool into JetStream;
//! - [`gateway`]: the ingest listeners publishing to JetStream, and the central decoder of their records;
//! - [`central`]: partition leases and the per-partition correlator writing to PostgreSQL;
//! - [`status`]: what a central node reports (bus, partitions, owners, consumer lag).
//!
//! See docs/fleet.md for the design and what is built so far.

pub mod batch;
pub mod bus;
pub mod central;
pub mod config;
pub mod edge;
pub mod gateway;
pub mod partition;
pub mod pg;
pub mod status;
mod tls;

#[cfg(feature = "test-servers")]
pub mod testing;

pub use config::{FleetConfig, NatsConfig, PostgresConfig, Role, TlsConfig};

use std::path::PathBuf;

/// Errors of the fleet roles.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet config: {0}")]
    Config(String),
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("PostgreSQL {context}: {source}")]
    Postgres {
        context: String,
        source: tokio_postgres::Error,
    },
    #[error("fleet alert store has schema version {found}, newer than this sensor understands ({supported}); upgrade the sensor")]
    NewerSchema { found: i64, supported: i64 },
    #[error("no fleet alert with id {0}")]
    NotFound(i64),
    #[error("fleet alert {id} holds invalid data: {detail}")]
    BadRow { id: i64, detail: String },
    #[error("NATS {context}: {message}")]
    Nats { context: String, message: String },
    #[error("edge spool: {0}")]
    Spool(String),
    /// A partition worker's writes were refused because another node has taken the partition over
    /// since (its epoch in `partition_checkpoints` is newer): this worker must stop.
    #[error("partition {partition}: taken over by another node (epoch {current}, ours {ours}); this worker stops")]
    Fenced {
        partition: u32,
        ours: i64,
        current: i64,
    },
}

impl FleetError {
    pub(crate) fn pg(
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> FleetError {
        let context = context.into();
        move |source| FleetError::Postgres { context, source }
    }

    pub(crate) fn nats<E: std::fmt::Display>(
        context: impl Into<String>,
    ) -> impl FnOnce(E) -> FleetError {
        let context = context.into();
        move |e| FleetError::Nats {
            context,
            message: e.to_string(),
        }
    }

    /// Whether retrying later may succeed (the server is down, restarting or unreachable), as opposed
    /// to an error in the data or the configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            FleetError::Postgres { source, .. } => pg::is_transient(source),
            FleetError::Nats { .. } => true,
            _ => false,
        }
    }
}

/// Reads a secret file (password, seed), without its trailing newline.
pub(crate) fn read_secret(
    what: &'static str,
    path: &std::path::Path,
) -> Result<String, FleetError> {
    let s = std::fs::read_to_string(path).map_err(|source| FleetError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

/// The wall clock in ns since the epoch (bookkeeping columns only; dedup uses event time).
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
