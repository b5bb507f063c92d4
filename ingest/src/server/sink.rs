//! Where the listeners put accepted records: the seam between the listeners (authentication,
//! limits, validation) and what makes a record durable before the agent is acknowledged.
//!
//! The daemon's listeners write to the local [`Spool`]; a fleet gateway (`fleet::gateway`) writes to
//! JetStream and returns only once the bus acknowledged every record. Either way the listener
//! acknowledges the agent only after [`RecordSink::append_with_header`] returned `Ok`.

use std::path::Path;

use crate::spool::{Spool, SpoolError};

/// Why a sink did not keep a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The local spool failed (full, disk, record too large).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The downstream (the bus) is unreachable or did not acknowledge in time: retry later; nothing
    /// of the batch may be taken as kept.
    #[error("downstream unavailable: {0}")]
    Unavailable(String),
}

/// A durable destination for accepted records. Called from blocking threads (the listeners run it
/// in `spawn_blocking`), so an implementation may block until its records are durable.
pub trait RecordSink: Send + Sync + 'static {
    /// Keeps every record (each `header ++ record`), all or none, and returns once they are
    /// durable: a sequence number of the last one (meaningful to the sink only).
    fn append_with_header(&self, header: &[u8], records: &[&[u8]]) -> Result<u64, SinkError>;
    /// How far records are durable (reported by `/v1/health`).
    fn durable(&self) -> u64;
    /// Where the listeners keep their own small state (the agents' header contexts); `None` for a
    /// stateless sink (a gateway: contexts then live in memory only).
    fn state_dir(&self) -> Option<&Path>;
    /// The largest record (header included) the sink takes, when it has a limit of its own.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }
}

impl RecordSink for Spool {
    fn append_with_header(&self, header: &[u8], records: &[&[u8]]) -> Result<u64, SinkError> {
        Ok(Spool::append_with_header(self, header, records)?)
    }
    fn durable(&self) -> u64 {
        Spool::durable(self)
    }
    fn state_dir(&self) -> Option<&Path> {
        Some(self.dir())
    }
    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.limits().max_record_bytes)
    }
}
