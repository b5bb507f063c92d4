//! The edge's publisher: drains a durable local journal (the ingest spool) into JetStream.
//!
//! The daemon appends each normalised event (and each alert it raises) to the journal as a record
//! `tag: u8 ('E' event, 'A' alert) | partition: u32 LE | ECS JSON`; the partition is computed at
//! append time from the event's host ([`crate::partition`]). The publisher reads records after the
//! journal's checkpoint, publishes up to `publish_window` of them, each with the message id
//! `<edge id>:<sequence>`, waits for every acknowledgement, and only then commits the checkpoint.
//!
//! - Bus unreachable (or the stream missing): the acknowledgements fail or time out, nothing is
//!   committed, records stay in the journal (which keeps taking new ones) and the publisher retries
//!   from the checkpoint with backoff. Nothing is lost.
//! - A record published whose acknowledgement was lost (or the edge dying between publish and
//!   commit) is published again with the same message id; JetStream drops it as a duplicate within
//!   the stream's duplicate window (`fleet.nats.dedup_window_secs`). Nothing is doubled.
//!
//! Architecture Invariant: a journal record is committed only after JetStream acknowledged it (or
//! reported it a duplicate, i.e. already stored); the message id of a record never changes.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;

use crate::bus::{Bus, Kind};
use crate::FleetError;

/// A durable, ordered log of records with a commit point: what the edge publishes from. The ingest
/// spool is one (implemented below).
pub trait Journal: Sync {
    type Reader<'a>: JournalReader + Send
    where
        Self: 'a;
    /// A reader of the records after sequence number `after`.
    fn reader(&self, after: u64) -> Self::Reader<'_>;
    /// The highest sequence number committed (published and acknowledged).
    fn committed(&self) -> u64;
    /// Marks every record up to `seq` as done; the journal may delete them.
    fn commit(&self, seq: u64) -> Result<(), FleetError>;
    /// Resolves once a record after `seq` is durable.
    fn wait_beyond(&self, seq: u64) -> impl Future<Output = ()> + Send;
}

/// Reads a [`Journal`] in order.
pub trait JournalReader {
    /// Up to `max` durable records (sequence number, record), in order; empty when none is ready.
    fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, FleetError>;
}

/// The ingest spool is the edge's journal: dense sequence numbers from 1, `fdatasync`ed batches, a
/// checkpoint file, whole segments deleted at or below it.
impl Journal for ingest::Spool {
    type Reader<'a> = ingest::SpoolReader<'a>;
    fn reader(&self, after: u64) -> ingest::SpoolReader<'_> {
        ingest::Spool::reader(self, after)
    }
    fn committed(&self) -> u64 {
        ingest::Spool::committed(self)
    }
    fn commit(&self, seq: u64) -> Result<(), FleetError> {
        ingest::Spool::commit(self, seq).map_err(|e| FleetError::Spool(e.to_string()))
    }
    fn wait_beyond(&self, seq: u64) -> impl Future<Output = ()> + Send {
        ingest::Spool::wait_beyond(self, seq)
    }
}

impl JournalReader for ingest::SpoolReader<'_> {
    fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, FleetError> {
        ingest::SpoolReader::next_batch(self, max).map_err(|e| FleetError::Spool(e.to_string()))
    }
}

/// Builds a journal record for `json` of `kind` in `partition`.
pub fn encode_record(kind: Kind, partition: u32, json: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(5 + json.len());
    r.push(kind.tag());
    r.extend_from_slice(&partition.to_le_bytes());
    r.extend_from_slice(json);
    r
}

/// Splits a journal record into its kind, partition and JSON.
pub fn decode_record(r: &[u8]) -> Option<(Kind, u32, &[u8])> {
    let (&tag, rest) = r.split_first()?;
    let kind = Kind::from_tag(tag)?;
    let (p, json) = rest.split_at_checked(4)?;
    let partition = u32::from_le_bytes(p.try_into().ok()?);
    Some((kind, partition, json))
}

/// The edge's identity on the bus: read from `<dir>/edge-id`, created (random, 128 bits) on first
/// use. It must outlive restarts: message ids are `<edge id>:<sequence>`.
pub fn edge_id(dir: &Path) -> Result<String, FleetError> {
    let path = dir.join("edge-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FleetError::ReadFile {
                what: "edge id file",
                path,
                source,
            })
        }
    }
    let mut b = [0u8; 16];
    let io = |source| FleetError::ReadFile {
        what: "edge id file",
        path: path.clone(),
        source,
    };
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(io)?,
        &mut b,
    )
    .map_err(io)?;
    let id = hex::encode(b);
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join("edge-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

/// Counters of a publisher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Records acknowledged as newly stored.
    pub published: u64,
    /// Records JetStream reported as already stored (republished after a lost acknowledgement).
    pub duplicates: u64,
    /// Records that are not journal records of ours (skipped, with an error logged).
    pub malformed: u64,
    /// Batches that failed (bus unreachable, timed out) and were retried.
    pub retries: u64,
}

/// Publishes a journal to the bus.
#[derive(Debug)]
pub struct EdgePublisher {
    bus: Bus,
    edge_id: String,
    window: usize,
}

impl EdgePublisher {
    pub fn new(bus: Bus, edge_id: String, window: usize) -> EdgePublisher {
        EdgePublisher {
            bus,
            edge_id,
            window: window.max(1),
        }
    }

    /// The message id of journal record `seq`.
    pub fn message_id(&self, seq: u64) -> String {
        format!("{}:{seq}", self.edge_id)
    }

    /// Publishes until `stop` turns true, then returns what it did. Journal errors (its files) end it
    /// with an error; bus errors are retried.
    pub async fn run<J: Journal>(
        &self,
        journal: &J,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<PublishStats, FleetError> {
        let mut stats = PublishStats::default();
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        'resume: loop {
            let mut read_upto = journal.committed();
            let mut reader = journal.reader(read_upto);
            loop {
                if *stop.borrow() {
                    return Ok(stats);
                }
                let batch = reader.next_batch(self.window)?;
                let Some(&(last, _)) = batch.last() else {
                    tokio::select! {
                        () = journal.wait_beyond(read_upto) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                };
                read_upto = last;
                match self.publish_batch(&batch, &mut stats).await {
                    Ok(()) => {
                        journal.commit(last)?;
                        if failing {
                            tracing::info!(
                                through = last,
                                "bus reachable again: edge journal catching up"
                            );
                            failing = false;
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        stats.retries += 1;
                        if !failing {
                            tracing::warn!(error = %e, committed = journal.committed(), "publishing to the bus failed; events stay in the edge journal and are retried");
                            failing = true;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue 'resume;
                    }
                }
            }
        }
    }

    async fn publish_batch(
        &self,
        batch: &[(u64, Vec<u8>)],
        stats: &mut PublishStats,
    ) -> Result<(), FleetError> {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        for (seq, rec) in batch {
            let Some((kind, partition, json)) = decode_record(rec) else {
                stats.malformed += 1;
                tracing::error!(
                    seq,
                    len = rec.len(),
                    "edge journal record is not a fleet record; skipped"
                );
                continue;
            };
            let subject = self.bus.names.subject(kind, partition);
            let msg = PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(json))
                .message_id(self.message_id(*seq));
            let ack = self
                .bus
                .js
                .send_publish(subject, msg)
                .await
                .map_err(FleetError::nats(format!("publishing record {seq}")))?;
            acks.push(ack);
        }
        let mut first_err = None;
        for ack in acks {
            match ack.await {
                Ok(a) if a.duplicate => stats.duplicates += 1,
                Ok(_) => stats.published += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(FleetError::Nats {
                context: "waiting for publish acknowledgements".to_string(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = encode_record(Kind::Event, 7, br#"{"a":1}"#);
        assert_eq!(
            decode_record(&r),
            Some((Kind::Event, 7, &br#"{"a":1}"#[..]))
        );
        assert_eq!(decode_record(b"E12"), None);
        assert_eq!(decode_record(b"X1234{}"), None);
        assert_eq!(decode_record(b""), None);
    }

    #[test]
    fn edge_id_is_kept() {
        let dir = std::env::temp_dir().join(format!("fleet-edge-id-{}", std::process::id()));
        let a = edge_id(&dir).ok();
        let b = edge_id(&dir).ok();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(a.as_ref().is_some_and(|s| s.len() == 32));
        assert_eq!(a, b);
    }
}
