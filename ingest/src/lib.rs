//! Network ingest of events from remote agents: per-format decoders to the ECS event model, a durable
//! write-ahead spool, and the listeners (HTTPS and the auditd remote protocol) that feed it.
//!
//! The decoders are pure (no I/O, no clock) and never panic on any input: a bad record becomes a
//! [`DecodeError`] naming its line and what was wrong, and the records around it are unaffected.

pub mod agents;
pub mod consumer;
pub mod decode;
pub mod edge;
pub mod secret;
pub mod server;
pub mod spool;

pub use decode::{
    decode_reader, decode_readers, decoder, lacks_ecs_category, uncategorized_warning, DecodeError,
    Decoder, Format,
};
pub use server::{bind, bind_sink, serve, Bound, IngestConfig, IngestError, RecordSink, SinkError};
pub use spool::{Spool, SpoolError, SpoolLimits, SpoolReader};
